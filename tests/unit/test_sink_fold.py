"""``sink.fold``: one change per run_id, last wins, unavailable columns filled in-batch."""

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


def up(run_id: str, lsn: int | None, tag: str, *unavailable: str) -> RowChange:
    return RowChange(run_id, lsn, False, values(run_id, tag), frozenset(unavailable))


def delete(run_id: str, lsn: int | None) -> RowChange:
    return RowChange(run_id, lsn, True, None)


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
        [up("a", 5, "x"), up("a", None, "y", "tags")],
        [RowChange("a", None, False, patched(up("a", None, "y"), tags="x:tags"))],
        id="lsn-none-winner-keeps-none",
    ),
    pytest.param([delete("a", 1), delete("a", 2)], [delete("a", 2)], id="delete-twice"),
]


@pytest.mark.parametrize(("changes", "expected"), CASES)
def test_fold(changes: list[RowChange], expected: list[RowChange]) -> None:
    assert fold(changes) == expected


def test_fold_does_not_mutate_input() -> None:
    changes = [up("a", 1, "x"), up("a", 2, "y", "result_data")]
    before = list(changes)
    fold(changes)
    assert changes == before


# -- property: fold equals applying the changes one by one to a dict model -------------

UNKNOWN = object()
NAMES = ("result_data", "tags", "status")


def model(changes: list[RowChange]) -> dict[str, Any]:
    """run_id -> ("delete", lsn) | ("upsert", lsn, {column: value or UNKNOWN})."""
    rows: dict[str, Any] = {}
    for ch in changes:
        if ch.delete:
            rows[ch.run_id] = ("delete", ch.lsn)
            continue
        assert ch.values is not None
        prior = rows.get(ch.run_id)
        known = prior[2] if prior is not None and prior[0] == "upsert" else {}
        image = {
            name: known.get(name, UNKNOWN) if name in ch.unavailable else ch.values[i]
            for i, name in enumerate(TARGET_COLUMNS)
        }
        rows[ch.run_id] = ("upsert", ch.lsn, image)
    return rows


def as_model(folded: list[RowChange]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for ch in folded:
        if ch.delete:
            rows[ch.run_id] = ("delete", ch.lsn)
        else:
            assert ch.values is not None
            image = {
                name: UNKNOWN if name in ch.unavailable else ch.values[i]
                for i, name in enumerate(TARGET_COLUMNS)
            }
            rows[ch.run_id] = ("upsert", ch.lsn, image)
    return rows


@st.composite
def change_lists(draw: st.DrawFn) -> list[RowChange]:
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from("abc"),
                st.booleans(),
                st.frozensets(st.sampled_from(NAMES)),
                st.one_of(st.none(), st.integers(0, 10**12)),
            ),
            max_size=25,
        )
    )
    out = []
    for n, (run_id, is_delete, unavailable, lsn) in enumerate(steps):
        if is_delete:
            out.append(delete(run_id, lsn))
        else:
            out.append(up(run_id, lsn, f"v{n}", *unavailable))
    return out


@given(change_lists())
def test_fold_matches_sequential_model(changes: list[RowChange]) -> None:
    folded = fold(changes)
    assert len({ch.run_id for ch in folded}) == len(folded)
    assert as_model(folded) == model(changes)


@given(change_lists())
def test_fold_is_idempotent(changes: list[RowChange]) -> None:
    once = fold(changes)
    assert fold(once) == once
