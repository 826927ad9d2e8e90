"""The inverse mapping of the compatibility view, and the cutover's checks, without a
database (tests/integration/test_migration_cutover.py runs them on a real one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from replicator.cutover.legacy import (
    checked_type,
    float32,
    legacy_items,
    legacy_row,
    unwrap,
    view_select,
    write_function,
)
from replicator.cutover.readiness import Check, _check
from replicator.mapping.columns import SOURCE_COLUMNS, SOURCE_TYPES, TARGET_COLUMNS
from replicator.mapping.rows import map_to_tuple

SHAPE = [(c, SOURCE_TYPES[c]) for c in SOURCE_COLUMNS]


def target(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(TARGET_COLUMNS)
    row.update(run_id="r1", workflow_type="w", description="d", status="pending")
    row.update(priority="normal", tags="[]", metadata="{}", progress_data="{}")
    row.update(resource_usage="{}", result_data="{}", error_details="{}")
    row.update(values)
    return row


def test_every_legacy_column_comes_from_its_target_column() -> None:
    when = datetime(1969, 7, 20, 20, 17, 40, 123456)
    row = legacy_row(
        target(
            run_id="wp-1",
            workflow_type="bug-fix",
            description="msg",
            max_turns=None,
            session_id="s",
            git_branch="b",
            repository_url="u",
            created_at=when,
            updated_at=when,
            started_at=None,
            completed_at=when,
            status="running",
            result_data='{"result": "ok"}',
            error_details='{"error": "boom"}',
            execution_time_ms=-5,
            total_cost=Decimal("12.5000"),
        )
    )
    assert list(row) == list(SOURCE_COLUMNS)
    assert row == {
        "id": "wp-1",
        "workflow_name": "bug-fix",
        "message": "msg",
        "max_turns": None,
        "session_name": "s",
        "git_branch": "b",
        "repository_url": "u",
        "created_at": when,
        "updated_at": when,
        "status": "running",
        "result": "ok",
        "error_message": "boom",
        "execution_time": -5,
        "total_cost": 12.5,
        "started_at": None,
        "completed_at": when,
    }


@pytest.mark.parametrize(
    ("document", "shown"),
    [
        (None, None),  # a NULL stays NULL
        ("{}", None),  # the mapping's NULL
        ('{"result": ""}', ""),  # an empty text is not NULL
        ('{"result": "say \\"hi\\"\\n\\u0007é"}', 'say "hi"\n\x07é'),
        ('{"result": null}', '{"result": null}'),  # not the wrapped form: shown as JSON
        ('{"result": 5}', '{"result": 5}'),
        ('{"result": "x", "more": 1}', '{"result": "x", "more": 1}'),
        ('{"other": "x"}', '{"other": "x"}'),
        ('["result"]', '["result"]'),
        ('"result"', '"result"'),
        ({"result": "parsed"}, "parsed"),  # as psycopg hands a json column over
    ],
)
def test_json_unwrapping(document: Any, shown: str | None) -> None:
    assert unwrap(document, "result") == shown


@pytest.mark.parametrize(
    "text", [None, "", "plain", 'quote " backslash \\ tab \t nl \n', "\x00\x1f", "ünï ☃ 🚀"]
)
def test_the_inverse_undoes_the_mapping_of_every_text(text: str | None) -> None:
    legacy: dict[str, Any] = dict.fromkeys(SOURCE_COLUMNS)
    legacy.update(id="wp-2", workflow_name="w", message="m", result=text, error_message=text)
    mapped = dict(zip(TARGET_COLUMNS, map_to_tuple(legacy)[0], strict=True))
    back = legacy_row(mapped)
    assert back["result"] == text and back["error_message"] == text


@pytest.mark.parametrize(
    ("stored", "real"),
    [
        (None, None),
        (Decimal("0.1000"), 0.10000000149011612),  # the nearest float32
        (Decimal("999999.9999"), 1000000.0),
        (Decimal("-0.0001"), -9.999999747378752e-05),
        (Decimal("123456.7891"), 123456.7890625),
    ],
)
def test_total_cost_becomes_the_nearest_real(stored: Decimal | None, real: float | None) -> None:
    assert float32(stored) == real


def test_a_null_status_cannot_come_back_from_the_view() -> None:
    legacy: dict[str, Any] = dict.fromkeys(SOURCE_COLUMNS)
    legacy.update(id="wp-3", workflow_name="w", message="m", status=None)
    mapped = dict(zip(TARGET_COLUMNS, map_to_tuple(legacy)[0], strict=True))
    assert legacy_row(mapped)["status"] == "pending"  # the archive keeps the NULL


def test_the_view_has_the_legacy_columns_in_the_legacy_order_and_types() -> None:
    text = view_select(SHAPE, "public", "workflow_runs").as_string(None)
    positions = [text.index(f'AS "{c}"') for c in SOURCE_COLUMNS]
    assert positions == sorted(positions)
    assert '::real AS "total_cost"' in text
    assert '::timestamp without time zone AS "created_at"' in text
    assert 'FROM "public"."workflow_runs" AS t' in text


@pytest.mark.parametrize(
    "shape",
    [
        SHAPE[:-1],  # a column missing
        [*SHAPE, ("extra", "text")],  # a column the mapping does not know
        [("ident", "text"), *SHAPE[1:]],
    ],
)
def test_a_legacy_table_of_another_shape_is_refused(shape: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match="not the mapping's"):
        legacy_items(shape)


@pytest.mark.parametrize(
    "name",
    ["text", "character varying(255)", "numeric(10,4)", "timestamp(3) without time zone"],
)
def test_plain_types_are_accepted(name: str) -> None:
    assert checked_type(name) == name


@pytest.mark.parametrize("name", ["text; DROP TABLE x", "text)--", "int[]", "Text", ""])
def test_anything_else_in_a_type_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError):
        checked_type(name)


def test_the_write_function_runs_as_its_owner_with_a_fixed_search_path() -> None:
    text = write_function("fn", SHAPE, "public", "workflow_runs", "workflow_processes").as_string(
        None
    )
    assert "SECURITY DEFINER SET search_path = pg_catalog, pg_temp" in text
    body = json.dumps(text)  # the body is one literal: every table in it is qualified
    assert '\\"public\\".\\"workflow_runs\\"' in body
    assert "IS DISTINCT FROM o." in text  # an UPDATE writes only the columns it changed
    assert '"user_id" =' not in text  # and never the target's own columns


def test_a_check_says_why() -> None:
    assert _check("owner", True, "owns", "does not") == Check("owner", True, "owns")
    assert _check("owner", False, "owns", "does not") == Check("owner", False, "does not")


def test_a_rollback_that_does_not_commit_drops_the_slot_it_created(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from replicator.cutover import rollback
    from replicator.errors import TerminalError
    from replicator.settings import Settings

    dropped: list[str] = []
    monkeypatch.setattr(rollback, "create_slot", lambda settings, say: True)
    monkeypatch.setattr(rollback, "drop_slot", lambda dsn, slot, say: dropped.append(slot))

    def never_granted(settings: Settings, **kwargs: object) -> None:
        raise TerminalError("could not lock workflow_processes in 15 tries")

    monkeypatch.setattr(rollback, "roll_back", never_granted)
    settings = Settings(target_dsn="postgresql://a@b.invalid/c", kafka_bootstrap="k.invalid:1")
    with pytest.raises(TerminalError):
        rollback.roll_back_with_slot(settings, print)
    assert dropped == [settings.slot_name]
    dropped.clear()
    monkeypatch.setattr(rollback, "create_slot", lambda settings, say: False)  # it was there
    with pytest.raises(TerminalError):
        rollback.roll_back_with_slot(settings, print)
    assert dropped == []  # a slot it did not create is not its to drop


def test_a_slice_of_ids_is_composed_as_literal_bounds() -> None:
    from psycopg import sql

    from replicator.cutover.compare import differing, unmappable, within

    column = sql.SQL("p.id")
    assert within(column, None).as_string(None) == "TRUE"
    assert within(column, (None, "b")).as_string(None) == "p.id <= 'b'"
    assert within(column, ("a", None)).as_string(None) == "p.id > 'a'"
    assert within(column, ("a", "b")).as_string(None) == "p.id > 'a' AND p.id <= 'b'"
    whole = differing("public", "workflow_runs", ids=("a", "b")).as_string(None)
    assert "WHERE p.id > 'a' AND p.id <= 'b'" in whole  # the legacy side
    assert "WHERE t.run_id > 'a' AND t.run_id <= 'b'" in whole  # and the target's
    assert "p.id > 'a'" in unmappable("public", ids=("a", None)).as_string(None)


class _Conn:
    """A connection whose LOCK statements are refused ``refusals`` times."""

    def __init__(self, refusals: int) -> None:
        self.refusals, self.statements, self.rollbacks = refusals, [], 0

    def execute(self, statement: Any) -> None:
        text = statement if isinstance(statement, str) else statement.as_string(None)
        self.statements.append(text)
        if text.startswith("LOCK") and self.refusals:
            self.refusals -= 1
            raise psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")

    def rollback(self) -> None:
        self.rollbacks += 1


def test_a_bounded_step_is_tried_again_whole_then_given_up(monkeypatch: Any) -> None:
    from psycopg import sql

    from replicator.db import locks
    from replicator.errors import TerminalError

    monkeypatch.setattr(locks.time, "sleep", lambda _: None)

    def step(conn: _Conn) -> Callable[[], str]:
        return lambda: (locks.take(conn, sql.SQL("t"), "EXCLUSIVE"), "done")[1]  # type: ignore[arg-type, func-returns-value]

    conn = _Conn(refusals=2)
    assert locks.bounded(conn, "t", 0.5, 3, step(conn)) == ("done", 3)  # type: ignore[arg-type]
    assert conn.rollbacks == 2  # every refused try gave back what it took
    assert conn.statements.count("SET LOCAL lock_timeout = '500ms'") == 3
    refusing = _Conn(refusals=5)
    with pytest.raises(TerminalError, match=r"could not lock t in 2 tries of 0\.5 s"):
        locks.bounded(refusing, "t", 0.5, 2, step(refusing))  # type: ignore[arg-type]
    assert refusing.rollbacks == 2
