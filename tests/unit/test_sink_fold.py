"""``fold``: one change per run_id, the newest by version, unavailable columns filled in-batch."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.events import RowChange
from replicator.mapping.columns import TARGET_COLUMNS
from replicator.stream.apply.batch import fold

RESULT = TARGET_COLUMNS.index("result_data")
STATUS = TARGET_COLUMNS.index("status")
TAGS = TARGET_COLUMNS.index("tags")


def values(run_id: str, tag: str) -> tuple[Any, ...]:
    """A full row whose every non-key value names ``tag`` (so origins are traceable)."""
    return (run_id, *(f"{tag}:{name}" for name in TARGET_COLUMNS[1:]))


def up(run_id: str, lsn: int, tag: str, *unavailable: str, gen: int = 0) -> RowChange:
    return RowChange(run_id, lsn, False, values(run_id, tag), frozenset(unavailable), gen)


def delete(run_id: str, lsn: int, gen: int = 0) -> RowChange:
    return RowChange(run_id, lsn, True, None, frozenset(), gen)


def patched(base: RowChange, **columns: Any) -> tuple[Any, ...]:
    assert base.values is not None
    row = list(base.values)
    for name, value in columns.items():
        row[TARGET_COLUMNS.index(name)] = value
    return tuple(row)


CASES = [
    pytest.param([], [], id="empty"),
    pytest.param([up("a", 1, "x")], [up("a", 1, "x")], id="single"),
    pytest.param([up("a", 1, "x"), up("a", 2, "y")], [up("a", 2, "y")], id="last-wins"),
    pytest.param(
        [up("a", 1, "x"), up("b", 2, "y"), up("a", 3, "z")],
        [up("a", 3, "z"), up("b", 2, "y")],
        id="independent-keys",
    ),
    pytest.param([up("a", 1, "x"), delete("a", 2)], [delete("a", 2)], id="upsert-then-delete"),
    pytest.param([delete("a", 1), up("a", 2, "y")], [up("a", 2, "y")], id="delete-then-upsert"),
    pytest.param(
        [delete("a", 1), up("a", 2, "y", "result_data")],
        [up("a", 2, "y", "result_data")],
        id="no-filling-across-a-delete",
    ),
    pytest.param(
        [up("a", 1, "x", "result_data", "tags"), delete("a", 2), up("a", 3, "z", "tags")],
        [up("a", 3, "z", "tags")],
        id="delete-between-partials",
    ),
    pytest.param(
        [up("a", 1, "x"), up("a", 2, "y", "result_data")],
        [RowChange("a", 2, False, patched(up("a", 2, "y"), result_data="x:result_data"))],
        id="partial-filled-from-earlier-full",
    ),
    pytest.param(
        [up("a", 1, "x", "result_data"), up("a", 2, "y", "result_data")],
        [up("a", 2, "y", "result_data")],
        id="partial-still-unknown",
    ),
    pytest.param(
        [up("a", 1, "x", "result_data"), up("a", 2, "y", "tags")],
        [RowChange("a", 2, False, patched(up("a", 2, "y"), tags="x:tags"))],
        id="partials-complement-each-other",
    ),
    pytest.param(
        [up("a", 1, "x"), up("a", 2, "y", "tags"), up("a", 3, "z", "tags", "result_data")],
        [
            RowChange(
                "a", 3, False, patched(up("a", 3, "z"), tags="x:tags", result_data="y:result_data")
            )
        ],
        id="chain-of-partials",
    ),
    pytest.param(
        [up("a", 0, "x", gen=1), up("a", 0, "y", "tags", gen=1)],
        [RowChange("a", 0, False, patched(up("a", 0, "y"), tags="x:tags"), frozenset(), 1)],
        id="an-equal-version-replaces-and-is-filled",
    ),
    pytest.param([delete("a", 1), delete("a", 2)], [delete("a", 2)], id="delete-twice"),
    # arrival order is not version order: the newest change wins, whatever came after it
    pytest.param(
        [up("a", 1, "x"), up("a", 2, "y"), up("a", 1, "x")], [up("a", 2, "y")], id="v1-v2-v1"
    ),
    pytest.param([up("a", 7, "x"), delete("a", 3)], [up("a", 7, "x")], id="older-delete-late"),
    pytest.param([delete("a", 7), up("a", 3, "x")], [delete("a", 7)], id="older-upsert-late"),
    pytest.param(
        [up("a", 9, "x", gen=1), up("a", 100, "y")],
        [up("a", 9, "x", gen=1)],
        id="newer-generation-wins",
    ),
    pytest.param(
        [up("a", 5, "x"), up("a", 0, "y"), up("a", 3, "z")],
        [up("a", 5, "x")],
        id="a-snapshot-version-never-replaces-a-streamed-one",
    ),
    pytest.param(
        [up("a", 2, "y", "tags"), up("a", 1, "x")],
        [up("a", 2, "y", "tags")],
        id="older-full-image-never-fills-a-newer-partial",
    ),
]


@pytest.mark.parametrize(("changes", "expected"), CASES)
def test_fold(changes: list[RowChange], expected: list[RowChange]) -> None:
    assert fold(changes) == expected


def test_fold_does_not_mutate_input() -> None:
    changes = [up("a", 1, "x"), up("a", 2, "y", "result_data")]
    before = list(changes)
    fold(changes)
    assert changes == before


# -- property: fold equals applying the changes one by one through the order guard ----

UNKNOWN = object()
NAMES = ("result_data", "tags", "status")


def model(changes: list[RowChange]) -> dict[str, Any]:
    """The sink's order guard applied change by change (versions.py): run_id ->
    ("delete",) | ("upsert", {column: value or UNKNOWN}).  A change older than the
    row's version is skipped; a delete keeps the version; a partial upsert keeps the
    row's values of the columns it lacks (UNKNOWN when there is no row)."""
    rows: dict[str, Any] = {}
    versions: dict[str, tuple[int, int]] = {}
    for ch in changes:
        stored = versions.get(ch.run_id)
        if stored is not None and (ch.generation, ch.lsn) < stored:
            continue
        versions[ch.run_id] = (ch.generation, ch.lsn)
        if ch.delete:
            rows[ch.run_id] = ("delete",)
            continue
        assert ch.values is not None
        prior = rows.get(ch.run_id)
        known = prior[1] if prior is not None and prior[0] == "upsert" else {}
        image = {
            name: known.get(name, UNKNOWN) if name in ch.unavailable else ch.values[i]
            for i, name in enumerate(TARGET_COLUMNS)
        }
        rows[ch.run_id] = ("upsert", image)
    return rows


@st.composite
def change_lists(draw: st.DrawFn) -> list[RowChange]:
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from("abc"),
                st.booleans(),
                st.frozensets(st.sampled_from(NAMES)),
                st.integers(0, 10),
                st.integers(0, 2),
            ),
            max_size=25,
        )
    )
    out = []
    for n, (run_id, is_delete, unavailable, lsn, gen) in enumerate(steps):
        if is_delete:
            out.append(delete(run_id, lsn, gen))
        else:
            out.append(up(run_id, lsn, f"v{n}", *unavailable, gen=gen))
    return out


@given(change_lists())
def test_fold_matches_sequential_model(changes: list[RowChange]) -> None:
    folded = fold(changes)
    assert len({ch.run_id for ch in folded}) == len(folded)
    assert model(folded) == model(changes)


@given(change_lists())
def test_fold_is_idempotent(changes: list[RowChange]) -> None:
    once = fold(changes)
    assert fold(once) == once
