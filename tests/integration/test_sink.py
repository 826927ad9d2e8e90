"""PostgresSink against a real PostgreSQL: order guard, TOAST, atomicity, positions."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from replicator.errors import (
    ConfigurationError,
    EventError,
    GenerationChanged,
    PositionsFenced,
    TargetUnavailable,
)
from replicator.events import (
    ApplyResult,
    PartitionPosition,
    RowChange,
)
from replicator.mapping.columns import TARGET_COLUMNS
from replicator.stream.apply import generations
from replicator.stream.apply.checkpoint import PositionFence
from replicator.stream.apply.sink import PostgresSink
from replicator.stream.apply.transform import hold

pytestmark = pytest.mark.integration

if os.environ.get("REPLICATOR_TEST_TARGET_DSN"):

    @pytest.fixture(scope="session")
    def target_dsn() -> str:
        """A target database given directly (otherwise conftest's local stack provides it)."""
        return os.environ["REPLICATOR_TEST_TARGET_DSN"]


TOPIC = "legacy.public.workflow_processes"
JSON_COLUMNS = {"result_data", "error_details", "tags", "metadata", "progress_data"}
JSON_COLUMNS |= {"resource_usage"}
T0 = dt.datetime(2024, 2, 29, 23, 59, 58, 123456)


def row(run_id: str, n: int = 0, **overrides: Any) -> tuple[Any, ...]:
    """A complete mapped row; ``n`` varies every non-key column."""
    image: dict[str, Any] = {
        "run_id": run_id,
        "workflow_type": f"type-{n}",
        "description": f"description {n} ünïcode",
        "user_id": None,
        "status": ("pending", "running", "completed")[n % 3],
        "priority": "normal",
        "max_turns": 30 + n,
        "session_id": f"session-{n}",
        "git_branch": f"branch-{n}",
        "repository_url": f"https://example.com/repo-{n}.git",
        "created_at": T0 + dt.timedelta(microseconds=n),
        "updated_at": T0 + dt.timedelta(seconds=n, microseconds=1),
        "started_at": T0 if n % 2 else None,
        "completed_at": T0 + dt.timedelta(days=n) if n % 2 else None,
        "result_data": f'{{"result": "result {n}"}}',
        "error_details": "{}" if n % 2 else f'{{"error": "error {n}"}}',
        "execution_time_ms": 1000 + n,
        "total_cost": Decimal(n) + Decimal("0.1234"),
        "tags": "[]",
        "metadata": "{}",
        "progress_data": f'{{"step": {n}}}',
        "resource_usage": "{}",
    }
    image.update(overrides)
    return tuple(image[c] for c in TARGET_COLUMNS)


def up(run_id: str, lsn: int, n: int = 0, *unavailable: str, **kw: Any) -> RowChange:
    return RowChange(run_id, lsn, False, row(run_id, n, **kw), frozenset(unavailable))


def delete(run_id: str, lsn: int) -> RowChange:
    return RowChange(run_id, lsn, True, None)


def pos(partition: int, next_offset: int, lsn: int | None = None) -> PartitionPosition:
    return PartitionPosition(TOPIC, partition, next_offset, lsn)


class Target:
    """One isolated set of tables (target, versions, offsets) and a sink writing them."""

    def __init__(self, dsn: str, table: str, **sink_options: Any) -> None:
        self.dsn = dsn
        self.table = table
        self.offsets = f"{table}_offsets"
        self.sink = PostgresSink(dsn, table=table, offsets_table=self.offsets, **sink_options)
        self.created = self.sink.ensure_schema()

    def query(self, query: sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def execute(self, statement: sql.Composable) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement)

    def rows(self) -> dict[str, tuple[Any, ...]]:
        """Every target row, JSON columns as their exact text."""
        cols = sql.SQL(", ").join(
            sql.SQL("{}::text" if c in JSON_COLUMNS else "{}").format(sql.Identifier(c))
            for c in TARGET_COLUMNS
        )
        found = self.query(
            sql.SQL("SELECT {} FROM {} ORDER BY run_id").format(cols, sql.Identifier(self.table))
        )
        return {r[0]: r for r in found}

    def versions(self) -> dict[str, tuple[int, bool]]:
        found = self.query(
            sql.SQL("SELECT run_id, source_lsn, deleted FROM {}").format(
                sql.Identifier(self.sink.versions_table)
            )
        )
        return {r[0]: (r[1], r[2]) for r in found}

    def drop(self) -> None:
        self.sink.close()
        names = [self.table, self.sink.versions_table, self.offsets]
        self.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(
                sql.SQL(", ").join(map(sql.Identifier, names))
            )
        )


@pytest.fixture
def make_target(target_dsn: str) -> Iterator[Callable[..., Target]]:
    made: list[Target] = []

    def make(table: str | None = None, **sink_options: Any) -> Target:
        target = Target(target_dsn, table or f"wr_{uuid.uuid4().hex[:8]}", **sink_options)
        made.append(target)
        return target

    yield make
    for target in made:
        target.drop()


@pytest.fixture
def target(make_target: Callable[..., Target]) -> Target:
    return make_target()


def test_insert_update_delete(target: Target) -> None:
    result = target.sink.apply([up("a", 10), up("b", 11, 1), up("c", 12, 2)], [pos(0, 3, 12)])
    assert result == ApplyResult(upserted=3, deleted=0, stale=0, unresolved=())
    assert target.rows() == {"a": row("a", 0), "b": row("b", 1), "c": row("c", 2)}

    result = target.sink.apply([up("a", 20, 5), delete("b", 21)], [pos(0, 5, 21)])
    assert result == ApplyResult(upserted=1, deleted=1, stale=0, unresolved=())
    assert target.rows() == {"a": row("a", 5), "c": row("c", 2)}
    assert target.versions() == {"a": (20, False), "b": (21, True), "c": (12, False)}


def test_batch_with_several_changes_per_row_keeps_the_last(target: Target) -> None:
    changes = [up("a", 1, 1), up("a", 2, 2), delete("b", 3), up("b", 4, 4), delete("a", 5)]
    result = target.sink.apply(changes, [pos(0, 5, 5)])
    assert result == ApplyResult(upserted=1, deleted=1, stale=0, unresolved=())
    assert target.rows() == {"b": row("b", 4)}


def test_a_batch_keeps_the_newest_version_whatever_the_arrival_order(target: Target) -> None:
    # a key's events in two partitions of one lane, and Connect re-sending v1 after v2
    changes = [up("a", 10, 1), up("a", 20, 2), up("a", 10, 1), delete("b", 30), up("b", 5, 5)]
    result = target.sink.apply(changes, [pos(0, 3, 10), pos(1, 2, 30)])
    assert result == ApplyResult(upserted=1, deleted=1, stale=0, unresolved=())
    assert target.rows() == {"a": row("a", 2)}
    assert target.versions() == {"a": (20, False), "b": (30, True)}


def test_reapplying_the_same_batch_is_harmless(target: Target) -> None:
    batch = [up("a", 10, 1), up("b", 11, 2), delete("c", 12)]
    first = target.sink.apply(batch, [pos(0, 3, 12)])
    rows, versions = target.rows(), target.versions()
    again = target.sink.apply(batch, [pos(0, 3, 12)])
    assert again == first == ApplyResult(upserted=2, deleted=1, stale=0, unresolved=())
    assert target.rows() == rows
    assert target.versions() == versions


def test_stale_change_is_skipped_and_newer_row_kept(target: Target) -> None:
    target.sink.apply([up("a", 100, 7)], [pos(0, 1, 100)])
    result = target.sink.apply([up("a", 99, 3), delete("a", 50)], [pos(0, 2, 99)])
    assert result == ApplyResult(upserted=0, deleted=0, stale=1, unresolved=())
    assert target.rows() == {"a": row("a", 7)}  # every column compared
    assert target.versions() == {"a": (100, False)}


def test_delete_then_older_upsert_stays_deleted(target: Target) -> None:
    target.sink.apply([up("a", 10, 1)], [pos(0, 1)])
    target.sink.apply([delete("a", 20)], [pos(0, 2)])
    result = target.sink.apply([up("a", 15, 2)], [pos(0, 3)])
    assert result.stale == 1
    assert target.rows() == {}
    assert target.versions() == {"a": (20, True)}
    # a genuinely newer insert of the same id brings it back
    target.sink.apply([up("a", 30, 3)], [pos(0, 4)])
    assert target.rows() == {"a": row("a", 3)}


def test_a_version_at_least_the_stored_one_applies_an_older_one_is_skipped(
    target: Target,
) -> None:
    """The rule (versions.py): equal applies again, older is skipped, a delete keeps its
    entry, and nothing lowers an entry."""
    target.sink.apply([up("a", 100, 1), delete("b", 100)], [pos(0, 2, 100)])
    result = target.sink.apply([up("a", 100, 2), up("b", 99, 3), up("c", 0, 4)], [])
    assert result == ApplyResult(upserted=2, deleted=0, stale=1, unresolved=())
    assert target.rows() == {"a": row("a", 2), "c": row("c", 4)}
    assert target.versions() == {"a": (100, False), "b": (100, True), "c": (0, False)}
    assert target.sink.apply([up("a", 99, 5)], []).stale == 1
    assert target.sink.apply([up("c", 1, 6)], []).upserted == 1
    assert target.rows()["c"] == row("c", 6)


def test_snapshot_version_zero_fills_but_never_overrides(target: Target) -> None:
    """Version 0 (snapshot reads) loses to any streamed change, beats nothing stored."""
    target.sink.apply([up("a", 100, 1), delete("b", 100)], [])
    result = target.sink.apply([up("a", 0, 2), up("b", 0, 3), up("c", 0, 4)], [])
    assert result == ApplyResult(upserted=1, deleted=0, stale=2, unresolved=())
    assert target.rows() == {"a": row("a", 1), "c": row("c", 4)}
    # a later snapshot read of a row only snapshots have written replaces it
    assert target.sink.apply([up("c", 0, 5)], []).upserted == 1
    assert target.rows()["c"] == row("c", 5)


def test_a_newer_snapshot_generation_wins_and_sweeps_what_it_lacked(target: Target) -> None:
    """Versions compare as (generation, lsn) (stream/generations.py)."""
    topic, sink = f"t-{uuid.uuid4().hex[:8]}", target.sink

    def at(offset: int) -> list[PartitionPosition]:
        return [PartitionPosition(topic, 0, offset, None)]

    def of(generation: int, *changes: RowChange) -> list[RowChange]:
        return [c._replace(generation=generation) for c in changes]

    sink.apply([up("a", 100, 1), up("b", 100, 1), up("c", 100, 1), delete("d", 100)], at(4))
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        assert generations.record(conn, topic, None, {0: 4}) == 1
    with pytest.raises(GenerationChanged):  # stamped before generation 1 was known
        sink.apply(of(0, up("a", 200, 9)), at(5), stamped=(topic, 0))
    assert target.rows()["a"] == row("a", 1)
    # generation 1: its snapshot reads (lsn 0) beat every older change, a delete too; a
    # change it streams beats its snapshot whatever its LSN; b is not in the snapshot
    reads = of(1, up("a", 0, 2), up("d", 0, 2), up("c", 0, 2), up("c", 50, 3))
    assert sink.apply(reads, at(8), stamped=(topic, 1)).upserted == 3
    assert sink.apply(of(0, up("a", 500, 7)), []).stale == 1  # a late older change
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        generations.complete(conn, topic, 1, {0: 9})
    assert sink.sweep(topic) is None  # positions below the marks: reads may be missing
    sink.apply([], at(9))
    assert sink.sweep(topic) == (1, 1)
    assert sink.sweep(topic) is None  # once
    assert target.rows() == {"a": row("a", 2), "c": row("c", 3), "d": row("d", 2)}
    assert target.versions()["b"] == (0, True)
    assert sink.apply(of(0, up("b", 900, 5)), []).stale == 1  # never revived by the past
    assert sink.apply(of(1, up("b", 10, 6)), []).upserted == 1  # streamed later: applies
    assert target.rows()["b"] == row("b", 6)


def test_a_held_row_whose_new_snapshot_read_was_dead_lettered_survives_the_sweep(
    target: Target,
) -> None:
    """A re-snapshot's read that could not be used leaves a hold: the row stays as it
    was, versioned in the new generation, and the sweep keeps it."""
    topic, sink = f"t-{uuid.uuid4().hex[:8]}", target.sink
    at = [PartitionPosition(topic, 0, 2, None)]
    sink.apply([up("a", 100, 1), up("b", 100, 1)], at)
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        generations.record(conn, topic, None, {0: 2})
    held = hold("a", 1)
    assert held is not None and hold("a", 0) is None  # no sweep in generation 0
    result = sink.apply([held], [PartitionPosition(topic, 0, 3, None)], stamped=(topic, 1))
    assert result.unresolved == ()
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        generations.complete(conn, topic, 1, {0: 3})
    assert sink.sweep(topic) == (1, 1)  # b, which the new snapshot did not have
    assert target.rows() == {"a": row("a", 1)}  # every column as it was
    assert target.versions()["a"] == (0, False)  # (generation 1, lsn 0)


def test_unavailable_columns_are_kept(target: Target) -> None:
    big = '{"result": "' + "x" * 100_000 + '"}'
    tags = '["one", "two"]'
    target.sink.apply([up("a", 10, 1, result_data=big, tags=tags)], [pos(0, 1)])
    placeholder = "__debezium_unavailable_value"
    partial = up("a", 20, 2, "result_data", "tags", result_data=placeholder, tags=placeholder)
    result = target.sink.apply([partial], [pos(0, 2)])
    assert result == ApplyResult(upserted=1, deleted=0, stale=0, unresolved=())
    assert target.rows() == {"a": row("a", 2, result_data=big, tags=tags)}
    assert target.versions()["a"] == (20, False)
    # an older partial change is stale like any other
    assert target.sink.apply([up("a", 15, 3, "result_data")], []).stale == 1
    assert target.rows()["a"] == row("a", 2, result_data=big, tags=tags)


def test_unavailable_columns_filled_from_the_same_batch(target: Target) -> None:
    big = '{"result": "' + "y" * 100_000 + '"}'
    changes = [up("a", 10, 1, result_data=big), up("a", 11, 2, "result_data", result_data=None)]
    result = target.sink.apply(changes, [pos(0, 2)])
    assert result == ApplyResult(upserted=1, deleted=0, stale=0, unresolved=())
    assert target.rows() == {"a": row("a", 2, result_data=big)}


def test_partial_change_for_a_missing_row_is_unresolved(target: Target) -> None:
    target.sink.apply([up("b", 5, 1), delete("c", 5)], [])
    changes = [up("a", 10, 1, "result_data"), up("b", 10, 2, "tags"), up("c", 10, 3, "tags")]
    result = target.sink.apply(changes, [pos(0, 3, 10)])
    assert result == ApplyResult(upserted=1, deleted=0, stale=0, unresolved=("a", "c"))
    assert set(target.rows()) == {"b"}
    # not versioned: the missing row can still be completed by a full image
    assert target.versions() == {"b": (10, False), "c": (5, True)}
    assert target.sink.load_positions(TOPIC)[0].next_offset == 3
    target.sink.apply([up("a", 11, 4)], [])
    assert target.rows()["a"] == row("a", 4)


def test_unknown_unavailable_column_is_a_bug_not_data(target: Target) -> None:
    with pytest.raises(ValueError, match="result"):
        target.sink.apply([up("a", 1, 0, "result")], [pos(0, 1)])
    assert target.rows() == {}
    assert target.sink.load_positions(TOPIC) == {}


def test_positions_are_stored_and_loaded(target: Target) -> None:
    assert target.sink.load_positions(TOPIC) == {}
    target.sink.apply([up("a", 10)], [pos(0, 5, 10), pos(3, 7, 9)])
    target.sink.apply([], [pos(3, 8, None), PartitionPosition("other", 0, 1, 1)])
    assert target.sink.load_positions(TOPIC) == {
        0: pos(0, 5, 10),
        3: pos(3, 8, 9),  # a batch without LSNs keeps the last known LSN
    }
    assert target.sink.load_positions("other") == {0: PartitionPosition("other", 0, 1, 1)}


def test_positions_are_per_target_table(make_target: Callable[..., Target]) -> None:
    first = make_target()
    second = PostgresSink(first.dsn, table=f"{first.table}_b", offsets_table=first.offsets)
    try:
        second.ensure_schema()
        first.sink.apply([], [pos(0, 5)])
        second.apply([], [pos(0, 9)])
        assert first.sink.load_positions(TOPIC)[0].next_offset == 5
        assert second.load_positions(TOPIC)[0].next_offset == 9
    finally:
        second.close()
        first.execute(
            sql.SQL("DROP TABLE {}, {}").format(
                sql.Identifier(second.table), sql.Identifier(second.versions_table)
            )
        )


def test_failed_apply_leaves_neither_rows_nor_positions(target: Target) -> None:
    target.sink.apply([up("a", 1)], [pos(0, 1, 1)])
    bad = up("c", 3, 0, description=None)  # NOT NULL violation
    with pytest.raises(EventError) as caught:
        target.sink.apply([up("b", 2), bad, delete("a", 4)], [pos(0, 4, 4)])
    assert caught.value.reason == "target_rejected"
    assert isinstance(caught.value.__cause__, psycopg.errors.NotNullViolation)
    assert target.rows() == {"a": row("a")}
    assert target.versions() == {"a": (1, False)}
    assert target.sink.load_positions(TOPIC) == {0: pos(0, 1, 1)}
    # the same sink keeps working
    assert target.sink.apply([up("b", 2)], [pos(0, 2, 2)]).upserted == 1


def test_foreign_key_violation_is_rejected_data(target: Target) -> None:
    with pytest.raises(EventError):
        target.sink.apply([up("a", 1, user_id=f"nobody-{uuid.uuid4()}")], [pos(0, 1)])
    assert target.rows() == {}


def test_connection_lost_mid_apply_rolls_back_and_reconnects(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    target.sink.apply([up("a", 1)], [pos(0, 1, 1)])
    original = PostgresSink._stage

    def stage_then_die(self: PostgresSink, conn: psycopg.Connection[Any], folded: Any) -> Any:
        counts = original(self, conn, folded)
        with psycopg.connect(target.dsn, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
        return counts

    monkeypatch.setattr(PostgresSink, "_stage", stage_then_die)
    with pytest.raises(TargetUnavailable):
        target.sink.apply([up("a", 2, 1), up("b", 2)], [pos(0, 3, 2)])
    monkeypatch.undo()
    assert target.rows() == {"a": row("a")}
    assert target.sink.load_positions(TOPIC) == {0: pos(0, 1, 1)}
    result = target.sink.apply([up("a", 2, 1), up("b", 2)], [pos(0, 3, 2)])
    assert result.upserted == 2
    assert target.rows() == {"a": row("a", 1), "b": row("b")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_target_is_unavailable() -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    sink = PostgresSink(dsn, connect_timeout=2)
    for call in (sink.ping, lambda: sink.apply([up("a", 1)], [pos(0, 1)])):
        with pytest.raises(TargetUnavailable) as caught:
            call()
        assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    with pytest.raises(TargetUnavailable):
        sink.load_positions(TOPIC)
    sink.close()


def test_rows_applied_without_their_positions_are_fenced_too(
    make_target: Callable[..., Target],
) -> None:
    """A dead-letter bisection applies halves of a batch without storing positions: once
    someone else moved them (a cutover closed them), no half commits."""
    target = make_target(fence=PositionFence())
    target.sink.apply([up("a", 1)], [pos(0, 1, 1)])
    target.sink.apply([up("b", 2)], [], fenced=[pos(0, 2, 2)])  # still ours: applies
    other = PostgresSink(target.dsn, table=target.table, offsets_table=target.offsets)
    other.apply([], [pos(0, 9)])  # moved by another writer
    other.close()
    with pytest.raises(PositionsFenced):
        target.sink.apply([up("c", 3)], [], fenced=[pos(0, 2, 3)])
    assert sorted(target.rows()) == ["a", "b"]


def test_ping_reports_a_lost_connection_and_reconnects(target: Target) -> None:
    target.sink.ping()
    pid = target.sink._conn.info.backend_pid  # type: ignore[union-attr]
    target.execute(sql.SQL("SELECT pg_terminate_backend({})").format(sql.Literal(pid)))
    with pytest.raises(TargetUnavailable):
        target.sink.ping()
    target.sink.ping()  # a new connection
    assert target.sink._conn is not None
    assert target.sink._conn.info.backend_pid != pid


def test_ignored_deletes_keep_rows_but_record_versions(
    make_target: Callable[..., Target],
) -> None:
    target = make_target(apply_deletes=False)
    target.sink.apply([up("a", 10, 1)], [pos(0, 1)])
    result = target.sink.apply([delete("a", 20)], [pos(0, 2)])
    assert result == ApplyResult(upserted=0, deleted=0, stale=0, unresolved=())
    assert target.rows() == {"a": row("a", 1)}
    assert target.versions() == {"a": (20, True)}
    assert target.sink.apply([up("a", 15, 2)], []).stale == 1
    assert target.rows() == {"a": row("a", 1)}


def test_a_truncate_deletes_what_is_older_and_keeps_what_came_after(target: Target) -> None:
    target.sink.apply(
        [up("a", 10), delete("b", 11), up("c", 30, 3)], [pos(0, 5, 11), pos(1, 7, 30)]
    )
    assert target.sink.truncate(0, 20, [pos(0, 6, 20)]) == 1  # "a"; "b" was gone already
    assert target.rows() == {"c": row("c", 3)}  # changed after the truncate (another partition)
    assert target.versions() == {"a": (20, True), "b": (20, True), "c": (30, False)}
    stored = target.sink.load_positions(TOPIC)
    assert stored == {0: pos(0, 6, 20), 1: pos(1, 7, 30)}  # the other partition's is kept
    # a change made before the truncate, delivered after it, is refused by the floor, even
    # for a row no change had versioned (an insert still unread in another partition), and
    # by any sink of the table (a restart, another member of the group); a later one applies
    assert target.sink.apply([up("a", 15, 1), up("b", 19, 1)], []).behind_floor == 2
    other = PostgresSink(target.dsn, table=target.table, offsets_table=target.offsets)
    result = other.apply([up("z", 19, 1), up("y", 0, 4)], [])
    other.close()
    # a snapshot read (an incremental one too: no LSN) may have been read before it
    assert (result.behind_floor, result.upserted) == (2, 0)
    assert target.sink.apply([up("a", 21, 2)], []).upserted == 1
    assert target.rows() == {"a": row("a", 2), "c": row("c", 3)}
    # a newer truncate raises the floor; an older one read later never lowers it
    target.sink.truncate(0, 40, [pos(1, 8, 40)])
    target.sink.truncate(0, 25, [pos(0, 7, 25)])
    assert target.sink.apply([up("x", 30, 1)], []).behind_floor == 1


def test_a_truncate_waits_for_a_batch_in_flight_and_deletes_its_older_rows(
    target: Target,
) -> None:
    """Another consumer's batch that claimed an insert made before the truncate, and has
    not committed yet: the truncate waits for it, then deletes that row too."""
    cols = sql.SQL(", ").join(map(sql.Identifier, TARGET_COLUMNS))
    with psycopg.connect(target.dsn) as other:  # a transaction of another consumer
        other.execute(
            sql.SQL(
                "INSERT INTO {} (run_id, generation, source_lsn, deleted) VALUES ('late', 0, 15,"
                " false)"
            ).format(sql.Identifier(target.sink.versions_table))
        )
        other.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(target.table), cols, sql.SQL(", ").join(sql.Placeholder() * 22)
            ),
            row("late", 1),
        )
        done = threading.Thread(target=target.sink.truncate, args=(0, 20, [pos(0, 1, 20)]))
        done.start()
        done.join(1.0)
        assert done.is_alive()  # waiting for the batch in flight
        other.commit()
    done.join(10)
    assert not done.is_alive()
    assert target.rows() == {}
    assert target.versions() == {"late": (20, True)}


def test_a_truncate_deletes_rows_no_change_versioned(target: Target) -> None:
    target.sink.apply([up("a", 10)], [pos(0, 1, 10)])
    target.execute(
        sql.SQL("INSERT INTO {} SELECT 'x', {} FROM {} WHERE run_id = 'a'").format(
            sql.Identifier(target.table),
            sql.SQL(", ").join(map(sql.Identifier, TARGET_COLUMNS[1:])),
            sql.Identifier(target.table),
        )
    )
    assert target.sink.truncate(0, 20, [pos(0, 2, 20)]) == 2
    assert target.rows() == {}
    assert target.versions() == {"a": (20, True)}


def test_ensure_schema_is_idempotent(target: Target) -> None:
    created = target.created
    assert created[1] == f"created table {target.table}"
    assert sum(line.startswith("created index ") for line in created) == 9
    assert created[-6:-4] == [
        f"created table {target.offsets}",
        f"created table {target.table}_versions",
    ]
    shared = ["replicator_redriven", "replicator_truncated", "replicator_generations"]
    shared.append("replicator_swept")
    assert [line.split()[2 if line.startswith("created") else 1] for line in created[-4:]] == shared
    again = target.sink.ensure_schema()
    assert len(again) == len(created)
    assert all(line.endswith("already present") for line in again)
    indexes = target.query(
        sql.SQL("SELECT count(*) FROM pg_indexes WHERE tablename = %s"), [target.table]
    )
    assert indexes == [(10,)]  # the primary key and the plan's nine


def test_odd_identifiers_are_quoted(make_target: Callable[..., Target]) -> None:
    target = make_target(table=f'Weird "Name"; DROP TABLE users; -- {uuid.uuid4().hex[:4]}')
    assert target.created[1] == f"created table {target.table}"
    assert all("already present" in line for line in target.sink.ensure_schema())
    big = '{"result": "' + "z" * 5000 + '"}'
    target.sink.apply([up("a", 1, result_data=big), delete("b", 1)], [pos(0, 2, 1)])
    target.sink.apply([up("a", 2, 1, "result_data")], [pos(0, 3, 2)])
    assert target.rows() == {"a": row("a", 1, result_data=big)}
    assert target.sink.load_positions(TOPIC) == {0: pos(0, 3, 2)}
    target.sink.empty()
    assert target.rows() == {}
    assert target.sink.load_positions(TOPIC) == {}
    assert target.query(sql.SQL("SELECT to_regclass('users') IS NOT NULL")) == [(True,)]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"max_turns": 2**31}, id="int4-overflow-is-not-wrapped"),
        pytest.param({"execution_time_ms": 2**70}, id="beyond-int8"),
        pytest.param({"max_turns": "thirty"}, id="wrong-python-type"),
        pytest.param({"total_cost": Decimal("1e7")}, id="numeric-10-4-overflow"),
        pytest.param({"progress_data": "not json"}, id="invalid-json"),
    ],
)
def test_values_the_target_cannot_hold_are_rejected(
    target: Target, overrides: dict[str, Any]
) -> None:
    with pytest.raises(EventError) as caught:
        target.sink.apply([up("ok", 1), up("bad", 1, **overrides)], [pos(0, 2)])
    assert caught.value.reason == "target_rejected"
    assert target.rows() == {}
    assert target.sink.load_positions(TOPIC) == {}
    assert target.sink.apply([up("ok", 1)], [pos(0, 2)]).upserted == 1  # still usable


def test_bad_configuration_is_reported_before_connecting() -> None:
    with pytest.raises(ConfigurationError, match="63 bytes"):
        PostgresSink("dbname=x", table="t" * 50)  # idx_<table>_workflow_type is too long
    with pytest.raises(ConfigurationError, match="connection string"):
        PostgresSink("host=x dbname='unterminated")
