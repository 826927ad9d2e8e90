"""The cutover's DDL against an application that holds locks, and its comparison against
the switch session's ``statement_timeout``: each test on a database of its own (the
session's stack for Kafka), the switch called as ``replicator cutover`` calls it.

* the pending log's cleanup never deadlocks an application's job pickup
  (``FOR UPDATE SKIP LOCKED``, then an update of the row it took);
* a cutover killed before the switch leaves triggers that readiness recognises as its
  own and the next cutover removes;
* a long transaction on ``workflow_runs`` does not hold readers of
  ``workflow_processes`` for the switch's whole wait;
* step 0's whole comparison is not bounded by the switch session's statement_timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from replicator.cutover import catalog, objects, pending, readiness, switch
from replicator.db import locks
from replicator.db.schema import apply_source_schema
from replicator.errors import TerminalError
from replicator.local.sample import insert_rows
from replicator.mapping.columns import TARGET_COLUMNS
from replicator.mapping.sql import MAPPED
from replicator.settings import Settings
from tests.integration.conftest import StackInfo, new_database, prepare_table

pytestmark = pytest.mark.integration
TARGET = "workflow_runs"


def database(stack: StackInfo, rows: int) -> str:
    """A database of its own: both tables, ``rows`` legacy rows, the target equal to them
    (as the stream left it)."""
    dsn = new_database(stack, "cobnd")
    apply_source_schema(dsn)
    prepare_table(dsn, TARGET)
    insert_rows(dsn, rows)
    copy = sql.SQL("INSERT INTO {t} ({cols}) SELECT {mapped} FROM workflow_processes AS p").format(
        t=sql.Identifier(TARGET),
        cols=sql.SQL(", ").join(map(sql.Identifier, TARGET_COLUMNS)),
        mapped=sql.SQL(", ").join(MAPPED[c] for c in TARGET_COLUMNS),
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(copy)
        conn.execute("ANALYZE")
    return dsn


def settings_for(stack: StackInfo, dsn: str) -> Settings:
    return stack.with_target(dsn).settings(source_dsn=dsn, target_dsn=dsn)


@pytest.fixture
def small(stack: StackInfo) -> Iterator[str]:
    yield database(stack, 300)


def start_pending_log(dsn: str) -> None:
    """What a cutover does before its switch (step 0), on a session that then ends without
    ending the log: as a cutover killed there leaves it."""
    with psycopg.connect(dsn, autocommit=False) as conn:
        objects.ensure_state(conn)
        conn.commit()
        pending.prepare(conn, "public", TARGET, (1.0, 10))


def triggers(dsn: str) -> list[str]:
    """The pending log's triggers on both tables (``trigger on table``)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tgname || ' on ' || tgrelid::regclass::text FROM pg_trigger"
            " WHERE tgname LIKE 'replicator_pending_%' ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


def in_background(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except BaseException as exc:  # reported to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def until(what: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def waiting(dsn: str, pid: int) -> bool:
    """Session ``pid`` waits for a lock."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", [pid])
        return row.fetchone() != (0,)


def holds_legacy_table(dsn: str, other_than: int) -> bool:
    """A session other than ``other_than`` holds ACCESS EXCLUSIVE on workflow_processes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = 'workflow_processes'::regclass"
            " AND mode = 'AccessExclusiveLock' AND granted AND pid <> %s",
            [other_than],
        ).fetchone()
        return row != (0,)


def test_the_cleanup_never_deadlocks_a_job_pickup(small: str) -> None:
    start_pending_log(small)
    assert triggers(small)
    with (
        psycopg.connect(small, autocommit=False) as app,
        psycopg.connect(small, autocommit=False) as ours,
    ):
        (job,) = app.execute(  # type: ignore[misc]
            "SELECT id FROM workflow_processes ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
        ).fetchone()
        cleanup, out = in_background(lambda: pending.unprepare(ours, "public", TARGET, (0.3, 60)))
        until(lambda: waiting(small, ours.info.backend_pid))  # our cleanup meets the row lock
        time.sleep(1.5)  # past deadlock_timeout (1 s): the application waits last
        app.execute("UPDATE workflow_processes SET status = 'running' WHERE id = %s", [job])
        app.commit()  # the application saw no error
        cleanup.join(60)
    assert "error" not in out, out
    assert out["result"] in (True, None)  # removed (True; None: a version without the flag)
    assert not triggers(small)


def test_an_interrupted_cutover_is_finished_by_the_next_one(
    stack: StackInfo, small: str, caplog: pytest.LogCaptureFixture
) -> None:
    start_pending_log(small)  # killed before its switch: the triggers stay
    left = triggers(small)
    assert len(left) == 8, left
    settings = settings_for(stack, small)
    with psycopg.connect(small, autocommit=True) as conn:
        assert catalog.dependents(conn, "workflow_processes", settings.slot_name) == []
        checks = {c.name: c for c in readiness._catalog_checks(conn, settings)}
    assert checks["nothing depends on it"].ok, checks
    said = " ".join(c.reason for c in checks.values())
    assert "replicator_pending_insert on workflow_processes" in said, checks
    with caplog.at_level(logging.INFO, logger="replicator.cutover"):
        done = switch.cut_over(settings, lock_timeout_s=1.0)
    assert done.source_rows == done.target_rows == 300
    assert not triggers(small)
    with psycopg.connect(small, autocommit=True) as conn:
        assert catalog.relkind(conn, "workflow_processes") == "v"


def test_a_long_transaction_on_workflow_runs_does_not_hold_the_legacy_table(
    stack: StackInfo, small: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(stack, small)
    long = psycopg.connect(small, autocommit=False)
    prepare = pending.prepare

    def then_a_long_transaction(*args: Any, **kwargs: Any) -> None:
        prepare(*args, **kwargs)  # step 0 done: now an application's long transaction begins
        long.execute("UPDATE workflow_runs SET description = 'held' WHERE run_id = 'wp-00000001'")

    monkeypatch.setattr(pending, "prepare", then_a_long_transaction)
    try:
        cutover, out = in_background(
            lambda: switch.cut_over(settings, lock_timeout_s=0.5, attempts=4)
        )
        until(lambda: holds_legacy_table(small, long.info.backend_pid))
        with psycopg.connect(small, autocommit=True, options="-c statement_timeout=10s") as r:
            (n,) = r.execute("SELECT count(*) FROM workflow_processes").fetchone()  # type: ignore[misc]
        assert n == 300
        assert long.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        cutover.join(120)
        assert not cutover.is_alive()
        assert isinstance(out.get("error"), TerminalError), out
        assert "could not lock" in str(out["error"])
    finally:
        long.rollback()
        long.close()
    with psycopg.connect(small, autocommit=True) as conn:
        assert catalog.relkind(conn, "workflow_processes") == "r"
        assert objects.latest(conn, "workflow_processes") is None
        conn.execute("UPDATE workflow_processes SET message = 'after' WHERE id = 'wp-00000002'")
        logged = conn.execute("SELECT count(*) FROM replicator_cutover_pending").fetchone()
        assert logged == (0,)  # what is left (if anything) logs nothing


def test_the_whole_comparison_is_free_of_the_switch_statement_timeout(
    stack: StackInfo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = database(stack, 150_000)
    settings = settings_for(stack, dsn)
    # the switch's session: 150 ms per statement (the whole comparison takes longer; every
    # statement of the switch itself costs what the pending log holds, a few ms)
    monkeypatch.setattr(switch, "holder_session", lambda _: locks.holder_session(0.15))
    monkeypatch.setattr(pending, "SLICE", 30_000, raising=False)
    with caplog.at_level(logging.INFO, logger="replicator.cutover"):
        done = switch.cut_over(settings, lock_timeout_s=1.0)
    assert done.source_rows == done.target_rows == 150_000
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("compared")]
    assert progress and progress[-1].startswith("compared all legacy rows"), progress
