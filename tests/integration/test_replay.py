"""replicator replay on the real stack: rebuild, replay in place, swap under load, fencing."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from replicator.db.schema import apply_target_schema
from replicator.errors import PositionsFenced
from replicator.events import PartitionPosition
from replicator.local.sample import insert_rows
from replicator.replay.runner import replay
from replicator.stream.apply.checkpoint import PositionFence
from replicator.stream.apply.sink import PostgresSink
from replicator.verify.runner import verify
from tests.integration.conftest import (
    RunningReplicator,
    StackInfo,
    execute,
    mapped_source,
    target_rows,
    unique,
    wait_converged,
)
from tests.integration.isolated import isolated_source

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def iso(stack: StackInfo) -> Iterator[StackInfo]:
    with isolated_source(stack, "rep") as isolated:
        yield isolated


def changes(dsn: str, prefix: str) -> None:
    """Updates and deletes, so that the topic holds more than one event per row."""
    execute(
        dsn,
        (
            "UPDATE workflow_processes SET status = 'running', total_cost = 2.5"
            " WHERE id LIKE %s AND id LIKE '%%1'",
            (prefix + "%",),
        ),
        ("DELETE FROM workflow_processes WHERE id LIKE %s AND id LIKE '%%7'", (prefix + "%",)),
    )


def test_replay_rebuilds_the_table(iso: StackInfo) -> None:
    table = unique("wr")
    apply_target_schema(iso.target_dsn, table)
    p = unique("rb")
    insert_rows(iso.source_dsn, 2000, prefix=f"{p}-")
    changes(iso.source_dsn, p)
    with RunningReplicator(iso.settings(target_table=table, group_id=unique("g"))):
        wait_converged(iso, table, "")
    execute(iso.target_dsn, f'DELETE FROM "{table}"')  # the target table's rows are gone
    expected = mapped_source(iso.source_dsn)

    report = replay(iso.settings(target_table=table))  # into the shadow <table>_replay
    assert report.table == f"{table}_replay" and not report.swapped
    assert target_rows(iso.target_dsn, f"{table}_replay") == expected
    assert report.events >= 2000 and report.dead_lettered == 0
    with psycopg.connect(iso.target_dsn) as conn:
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = %s", (f"{table}_replay",)
            )
        }
    assert len([i for i in indexes if i.startswith(f"idx_{table}_replay_")]) == 9
    # the service role, which verify and run use, may read the table the replay built
    service = iso.settings(target_table=table)
    checked = verify(service, target_table=f"{table}_replay", catch_up=lambda _t: None)
    assert checked.status == "in_sync", checked.status

    # into the live table itself: idempotent (the order guard), and again harmless
    for _ in range(2):
        replay(iso.settings(target_table=table), into=table)
        assert target_rows(iso.target_dsn, table) == expected
    with psycopg.connect(iso.target_dsn) as conn:
        live_positions = conn.execute(
            "SELECT count(*) FROM replicator_offsets WHERE target_table = %s", (table,)
        ).fetchone()
    assert live_positions is not None and live_positions[0] > 0  # left as run stored them


class Reader(threading.Thread):
    """Counts the rows of ``table`` in a loop; records failures and empty answers."""

    def __init__(self, dsn: str, table: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.table = dsn, table
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.counts: list[int] = []

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                try:
                    (n,) = conn.execute(f'SELECT count(*) FROM "{self.table}"').fetchone()  # type: ignore[misc]
                    self.counts.append(n)
                except psycopg.Error as exc:
                    self.errors.append(str(exc))
                time.sleep(0.005)


class Writer(threading.Thread):
    """Inserts a row into the source every few milliseconds until stopped."""

    def __init__(self, dsn: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.prefix = dsn, prefix
        self.stop = threading.Event()
        self.n = 0

    def run(self) -> None:
        while not self.stop.is_set():
            insert_rows(self.dsn, 3, prefix=f"{self.prefix}-", start=self.n)
            self.n += 3
            time.sleep(0.02)


def test_swap_under_readers_and_a_running_replicator(
    iso: StackInfo, cli_env: dict[str, str]
) -> None:
    table = unique("wr")
    apply_target_schema(iso.target_dsn, table)
    p = unique("sw")
    insert_rows(iso.source_dsn, 3000, prefix=f"{p}-")
    changes(iso.source_dsn, p)
    env = cli_env | {
        "REPLICATOR_SOURCE_DSN": iso.service_source_dsn,
        "REPLICATOR_ADMIN_SOURCE_DSN": iso.source_dsn,
        "REPLICATOR_TOPIC": iso.topic,
    }
    with RunningReplicator(iso.settings(target_table=table, group_id=unique("g"))):
        wait_converged(iso, table, "")
        before = len(target_rows(iso.target_dsn, table))
        reader = Reader(iso.target_dsn, table)
        writer = Writer(iso.source_dsn, f"{p}-w")  # the live replicator runs ahead of the replay
        reader.start()
        writer.start()
        try:
            res = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "replicator",
                    "replay",
                    "--swap",
                    "--target-table",
                    table,
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            writer.stop.set()
            writer.join(30)
            time.sleep(0.5)
            reader.stop.set()
            reader.join(30)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "swapped in" in res.stdout
        assert not reader.errors, reader.errors[:3]
        assert reader.counts and min(reader.counts) >= before  # never empty, never behind
        insert_rows(iso.source_dsn, 200, prefix=f"{p}-after-")  # streaming goes on
        # nothing lost, nothing extra: whether the live replicator was ahead of the replay
        # at the swap (then fenced, it re-reads from the handed-over positions) or level
        wait_converged(iso, table, "", timeout=120)

    with psycopg.connect(iso.target_dsn) as conn:
        old = [
            r[0]
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE %s",
                (f"{table}_old_%",),
            )
        ]
        assert len(old) == 2  # the old table and its versions table
        owners = dict(
            conn.execute(
                "SELECT indexname, tablename FROM pg_indexes WHERE indexname LIKE %s",
                (f"idx_{table}_%",),
            ).fetchall()
        )
        positions = dict(
            conn.execute(
                "SELECT target_table, count(*) FROM replicator_offsets"
                " WHERE target_table LIKE %s GROUP BY 1",
                (f"{table}%",),
            ).fetchall()
        )
    live_indexes = {i: t for i, t in owners.items() if t == table}
    assert len(live_indexes) == 9 and all(
        not i.startswith(f"idx_{table}_old") for i in live_indexes
    )
    assert set(positions) == {table, min(old, key=len)}  # the shadow's positions handed over


def test_positions_moved_under_a_running_replicator_are_reloaded(iso: StackInfo) -> None:
    """What a swap does to a running replicator, in isolation: its table is emptied and
    its positions moved back to the start by someone else.  Fenced, it re-reads from the
    moved positions; unfenced it would store its own and never re-read what it lost."""
    table = unique("wr")
    apply_target_schema(iso.target_dsn, table)
    p = unique("fe")
    insert_rows(iso.source_dsn, 500, prefix=f"{p}-")
    with RunningReplicator(iso.settings(target_table=table, group_id=unique("g"))):
        wait_converged(iso, table, "")
        execute(
            iso.target_dsn,
            f'DELETE FROM "{table}"',
            f'DELETE FROM "{table}_versions"',
            (
                "UPDATE replicator_offsets SET next_offset = 0 WHERE target_table = %s",
                (table,),
            ),
        )
        insert_rows(iso.source_dsn, 20, prefix=f"{p}-more-")
        wait_converged(iso, table, "")


def test_sink_fence_is_compare_and_set(iso: StackInfo) -> None:
    table = unique("wr")
    dsn = iso.target_dsn
    pos = PartitionPosition
    with (
        PostgresSink(dsn, table=table, fence=PositionFence()) as a,
        PostgresSink(dsn, table=table, fence=PositionFence()) as b,
    ):
        a.ensure_schema()
        assert a.load_positions("t") == {} and b.load_positions("t") == {}
        a.apply([], [pos("t", 0, 10, None), pos("t", 1, 5, None)])
        a.apply([], [pos("t", 0, 20, None)])
        with pytest.raises(PositionsFenced, match=r"t\[0\]: expected None, found 20"):
            b.apply([], [pos("t", 0, 11, None)])  # b still thinks nothing is stored
        assert b.load_positions("t")[0].next_offset == 20
        b.apply([], [pos("t", 0, 30, None)])  # after re-reading, b may move on
        with pytest.raises(PositionsFenced):
            a.apply([], [pos("t", 0, 21, None), pos("t", 1, 6, None)])  # a is a zombie now
        stored = PostgresSink(dsn, table=table).load_positions("t")
        assert {p: s.next_offset for p, s in stored.items()} == {0: 30, 1: 5}  # rolled back
        with pytest.raises(PositionsFenced):
            a.truncate(0, 100, [pos("t", 0, 40, None)])
        a.load_positions("t")
        a.truncate(0, 100, [pos("t", 0, 40, None)])
        stored = PostgresSink(dsn, table=table).load_positions("t")
        assert {p: s.next_offset for p, s in stored.items()} == {0: 40, 1: 5}


def test_swap_drop_old_keeps_grants_and_positions(iso: StackInfo) -> None:
    table = unique("wr")
    apply_target_schema(iso.target_dsn, table)
    with RunningReplicator(iso.settings(target_table=table, group_id=unique("g"))):
        wait_converged(iso, table, "")
    execute(iso.target_dsn, f'GRANT SELECT ON "{table}" TO PUBLIC')
    report = replay(iso.settings(target_table=table), swap=True, drop_old=True)
    assert report.swapped and report.old_table is None
    assert report.verify is not None and report.verify.status == "in_sync"
    assert target_rows(iso.target_dsn, table) == mapped_source(iso.source_dsn)
    with psycopg.connect(iso.target_dsn) as conn:
        leftovers = conn.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE %s OR relname LIKE %s",
            (f"{table}_old_%", f"{table}_replay%"),
        ).fetchall()
        positions = conn.execute(
            "SELECT target_table, count(*) FROM replicator_offsets WHERE target_table LIKE %s"
            " GROUP BY 1",
            (f"{table}%",),
        ).fetchall()
        (public_select,) = conn.execute(
            "SELECT has_table_privilege('public', %s, 'SELECT')", (f'"{table}"',)
        ).fetchone()  # type: ignore[misc]
    assert leftovers == [] and [t for t, _ in positions] == [table] and public_select
