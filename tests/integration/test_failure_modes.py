"""What production does to a pipeline, each on a stack of its own, as an operator runs it:
the CLI against ``stack up``/``stack down``, and the target compared with the source."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from replicator.clients.connect import ConnectClient, load_connector_file
from replicator.local.processes import free_port
from replicator.mapping.columns import TARGET_COLUMNS
from tests.integration.conftest import (
    RunningReplicator,
    StackInfo,
    churn_until,
    diff,
    execute,
    mapped_source,
    read_topic,
    target_rows,
    unique,
    wait_converged,
)
from tests.integration.isolated import isolated_source
from tests.integration.own_stack import OwnStack, converged, wait_for

pytestmark = pytest.mark.integration


def writer(dsn: str, stop: threading.Event, seed: int) -> threading.Thread:
    """The application: small transactions on the sample rows until ``stop``; it rides
    out a database crash (reconnects), as an application with a pool does."""

    def write() -> None:
        while not stop.is_set():
            try:
                churn_until(dsn, "wp", 500, stop, seed)
            except psycopg.OperationalError:
                time.sleep(0.5)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as res:
            return res.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_kafka_connect_killed_with_its_connector_stopped_loses_nothing(own_stack: OwnStack) -> None:
    port = free_port()
    run = own_stack.spawn_run(port)
    stop = threading.Event()
    app = writer(own_stack.settings["REPLICATOR_ADMIN_SOURCE_DSN"], stop, seed=11)
    try:
        time.sleep(5)
        # what an interrupted `connector apply --resnapshot` leaves: a connector STOPPED
        client = ConnectClient(own_stack.settings["REPLICATOR_CONNECT_URL"])
        client.stop(load_connector_file()["name"])
        time.sleep(2)
        os.kill(own_stack.pid("kafka-connect"), signal.SIGKILL)  # mid-stream, no goodbye
        time.sleep(3)
        # starts what is down, and resumes the stopped connector from its offsets
        own_stack.cli("stack", "up")
        status = own_stack.cli("connector", "status").stdout
        assert json.loads(status)["connector"]["state"] == "RUNNING", status
        time.sleep(5)
        stop.set()
        app.join(30)
        converged(own_stack)
        assert run.poll() is None, "replicator run exited"
    finally:
        stop.set()
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0, (own_stack.home / "run.log").read_text()[-3000:]


def test_postgres_crash_while_streaming_loses_nothing(own_stack: OwnStack) -> None:
    port = free_port()
    run = own_stack.spawn_run(port)
    stop = threading.Event()
    app = writer(own_stack.settings["REPLICATOR_ADMIN_SOURCE_DSN"], stop, seed=12)
    try:
        wait_for(lambda: readyz(port) == 200)  # assigned and applying
        time.sleep(3)
        os.kill(own_stack.pid("postgresql"), signal.SIGKILL)  # the postmaster: crash recovery
        deadline = time.monotonic() + 60
        while readyz(port) != 503:
            assert time.monotonic() < deadline, "/readyz never said unready"
            time.sleep(0.5)
        assert run.poll() is None, "replicator run exited while the database was down"
        own_stack.cli("stack", "up")  # restarts PostgreSQL (crash recovery), the rest runs
        restarted = own_stack.cli("connector", "status", ok=False)
        print(f"connector after the crash: {restarted.stdout}")
        if restarted.returncode != 0:  # what the README tells the operator to run
            own_stack.cli("connector", "restart")
        time.sleep(5)
        stop.set()
        app.join(30)
        converged(own_stack)
        assert run.poll() is None and readyz(port) == 200
    finally:
        stop.set()
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0, (own_stack.home / "run.log").read_text()[-3000:]


def test_a_broker_that_restarts_empty_loses_nothing(own_stack: OwnStack) -> None:
    cli = own_stack.cli
    cli("sample", "--rows", "1000", "--start", "1000")
    settings = own_stack.settings
    source, target = (
        settings["REPLICATOR_ADMIN_SOURCE_DSN"],
        settings["REPLICATOR_ADMIN_TARGET_DSN"],
    )
    with psycopg.connect(source, autocommit=True) as conn:  # every row streamed once more
        conn.execute("UPDATE workflow_processes SET max_turns = coalesce(max_turns, 0) + 1")
    cli("run", "--exit-when-idle", "8", "--log-format", "human")
    assert target_rows(target, "workflow_runs") == mapped_source(source)

    # Changes the replicator has not applied when the broker loses them: streamed, and
    # Connect's offsets committed, so the slot never sends them again (seed 771805)
    with psycopg.connect(source, autocommit=True) as conn:
        lost = [r[0] for r in conn.execute("SELECT id FROM workflow_processes ORDER BY id")]
        conn.execute(
            "UPDATE workflow_processes SET message = 'lost with the broker' WHERE id = ANY(%s)",
            [lost[:40]],
        )
        before = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
        conn.execute("DELETE FROM workflow_processes WHERE id = ANY(%s)", [lost[-15:]])
        # Debezium confirms a transaction to the slot once Connect committed its offset:
        # the slot then never sends these changes again (offsets flushed every second)
        confirmed = (
            "SELECT bool_and(confirmed_flush_lsn > %s) FROM pg_replication_slots"
            " WHERE slot_type = 'logical'"
        )
        wait_for(lambda: conn.execute(confirmed, before).fetchone()[0], timeout=60)
    # the local broker keeps its topics in memory: down/up re-creates them empty, and
    # Debezium re-snapshots into the new topic, whose offsets start again from 0
    cli("stack", "down")
    cli("stack", "up")
    cli("sample", "--rows", "1000", "--start", "3000")
    run = cli("run", "--exit-when-idle", "10", "--log-format", "human")
    assert "stored position set aside" in run.stderr, run.stderr[-3000:]
    assert "re-created under the stored positions" in run.stderr, run.stderr[-3000:]
    expected, actual = mapped_source(source), target_rows(target, "workflow_runs")
    assert len(expected) >= 2485  # 500 + 1,000 before the restart, 15 deleted, 1,000 after
    # the new topic is a generation of its own: its snapshot carries the lost updates
    assert {k: actual.get(k) for k in expected} == expected, diff(expected, actual)
    # the new topic carries the connector's whole new snapshot (it began there, and
    # Connect committed past it): the rows deleted while the broker held the deletes are
    # removed with no operator step, and nothing asks for one
    assert actual == expected, diff(expected, actual)
    assert "holds the connector's whole new snapshot" in run.stderr, run.stderr[-3000:]
    status = cli("connector", "status", ok=False)
    assert status.returncode == 0 and "--resnapshot" not in status.stdout, status.stdout
    port = free_port()
    spawned = own_stack.spawn_run(port)
    try:
        out = cli("connector", "apply", "--resnapshot", "--timeout", "120").stdout
        assert re.search(r"(\d+) rows deleted while nothing streamed removed", out), out
        converged(own_stack)
    finally:
        spawned.send_signal(signal.SIGTERM)
        assert spawned.wait(60) == 0, (own_stack.home / "run.log").read_text()[-3000:]
    assert cli("connector", "status", ok=False).returncode == 0
    assert "in sync" in cli("verify").stdout


EDGE = (
    "INSERT INTO workflow_processes (id, workflow_name, message, max_turns) VALUES (%s, 'w', %s, 1)"
)


def drop_slot(dsn: str, slot: str = "replicator_workflow_processes") -> None:
    """The slot is lost (a failover, a slot dropped by hand), once no task holds it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", [slot]
        ).fetchone() == (True,):
            assert time.monotonic() < deadline, "the slot stayed in use"
            time.sleep(0.5)
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s",
            [slot],
        )


def test_a_lost_slot_and_a_new_snapshot_lose_nothing(own_stack: OwnStack) -> None:
    settings = own_stack.settings
    source, target = (
        settings["REPLICATOR_ADMIN_SOURCE_DSN"],
        settings["REPLICATOR_ADMIN_TARGET_DSN"],
    )
    edges = ["wp-edge-updated", "wp-edge-deleted", "wp-edge-back", "wp-edge-kept"]
    port = free_port()
    run = own_stack.spawn_run(port)
    stop = threading.Event()
    app = writer(source, stop, seed=14)
    try:
        execute(source, *((EDGE, (rid, "streamed")) for rid in edges))
        wait_for(lambda: set(edges) <= set(target_rows(target, "workflow_runs")))
        own_stack.cli("connector", "delete")  # nothing streams from here on
        drop_slot(source)
        execute(  # the gap: the application goes on, nothing is streamed
            source,
            "UPDATE workflow_processes SET message = 'gap' WHERE id = 'wp-edge-updated'",
            "DELETE FROM workflow_processes WHERE id IN ('wp-edge-deleted', 'wp-edge-back')",
            (EDGE, ("wp-edge-back", "back")),
        )
        time.sleep(3)
        out = own_stack.cli("connector", "apply", "--resnapshot", "--timeout", "120").stdout
        print(out)
        begun = re.search(r"snapshot generation (\d+) begins at", out)
        assert begun is not None, out
        number = int(begun[1])  # 1, or one more per topic the broker lost before (above)
        removed = re.search(r"(\d+) rows deleted while nothing streamed removed", out)
        assert removed is not None and int(removed[1]) >= 1  # wp-edge-deleted at least
        time.sleep(3)  # streaming again, the application still writing
        stop.set()
        app.join(30)
        converged(own_stack)
        rows = target_rows(target, "workflow_runs", "run_id LIKE 'wp-edge-%%'")
        assert {r: row[2] for r, row in rows.items()} == {
            "wp-edge-updated": "gap", "wp-edge-back": "back", "wp-edge-kept": "streamed",
        }  # fmt: skip
        with psycopg.connect(target) as conn:
            versions = dict(
                conn.execute(
                    "SELECT run_id, (generation, source_lsn, deleted)::text"
                    " FROM workflow_runs_versions WHERE run_id LIKE 'wp-edge-%'"
                ).fetchall()
            )
            stale = conn.execute(
                "SELECT count(*) FROM workflow_runs_versions WHERE generation < %s AND NOT deleted",
                [number],
            ).fetchone()
        assert versions["wp-edge-deleted"] == f"({number},0,t)"  # swept: no change revives it
        assert versions["wp-edge-kept"] == f"({number},0,f)"  # the new snapshot's read
        assert stale == (0,)
        assert run.poll() is None, "replicator run exited"
        assert "in sync" in own_stack.cli("verify").stdout
        # the topic read again from its start, across both generations, rebuilds the same
        own_stack.cli("replay")
        assert target_rows(target, "workflow_runs_replay") == mapped_source(source)
    finally:
        stop.set()
        run.send_signal(signal.SIGTERM)
        assert run.wait(60) == 0, (own_stack.home / "run.log").read_text()[-3000:]


def test_source_schema_changes_while_streaming(stack: StackInfo) -> None:
    insert = (
        "INSERT INTO workflow_processes (id, workflow_name, message, max_turns, git_branch,"
        " total_cost) VALUES (%s, 'w', 'm', %s, 'main', 1.5)"
    )
    with isolated_source(stack, "sch") as iso:
        table, p = unique("wr"), unique("sc")
        settings = iso.settings(target_table=table, group_id=unique("g"))
        with RunningReplicator(settings) as running:
            metrics = running.replicator.metrics
            execute(iso.source_dsn, *[(insert, (f"{p}-{n}", 30)) for n in range(3)])
            wait_converged(iso, table, p)

            # a column added by the application team: ignored, counted, the stream flows
            execute(
                iso.source_dsn,
                "ALTER TABLE workflow_processes ADD COLUMN owner_team TEXT DEFAULT 'payments'",
                ("UPDATE workflow_processes SET status = 'running' WHERE id = %s", (f"{p}-0",)),
                (insert, (f"{p}-3", 31)),
            )
            wait_converged(iso, table, p)
            assert metrics.unmapped_columns.labels("owner_team")._value.get() >= 2

            set_cost = "UPDATE workflow_processes SET total_cost ="
            # mapped columns widened: what still fits flows, what the target cannot hold
            # (INTEGER max_turns) is dead-lettered
            execute(
                iso.source_dsn,
                "ALTER TABLE workflow_processes ALTER COLUMN max_turns TYPE BIGINT",
                "ALTER TABLE workflow_processes ALTER COLUMN total_cost TYPE DOUBLE PRECISION",
                (insert, (f"{p}-4", 2**31 + 5)),
                (insert, (f"{p}-5", 40)),
                # doubles beyond a float32's 7 digits: the value as printed, rounded
                (f"{set_cost} 123456.79 WHERE id = %s", (f"{p}-1",)),
                (f"{set_cost} 98765.43215 WHERE id = %s", (f"{p}-5",)),
            )
            fits = "id LIKE %s AND id <> %s"
            wait_for(lambda: metrics.tally.dead_lettered >= 1)
            expected = mapped_source(iso.source_dsn, fits, (p + "%", f"{p}-4"))
            wait_for(lambda: target_rows(stack.target_dsn, table, "TRUE") == expected)
            cost = TARGET_COLUMNS.index("total_cost")
            assert str(expected[f"{p}-1"][cost]) == "123456.7900"
            assert str(expected[f"{p}-5"][cost]) == "98765.4322"

            # a mapped column dropped: never a NULL in its place, the event is dead-lettered
            before = target_rows(stack.target_dsn, table, "run_id = %s", (f"{p}-2",))
            execute(
                iso.source_dsn,
                "ALTER TABLE workflow_processes DROP COLUMN git_branch",
                ("UPDATE workflow_processes SET status = 'done' WHERE id = %s", (f"{p}-2",)),
            )
            wait_for(lambda: metrics.tally.dead_lettered >= 2)
            assert target_rows(stack.target_dsn, table, "run_id = %s", (f"{p}-2",)) == before

        dead = read_topic(iso, f"{iso.topic}.dlq", want=2)
        reasons = {json.loads(k)["id"]: dict(h)["dlq.reason"].decode() for k, _, h in dead}
        errors = [dict(h)["dlq.error"].decode() for _, _, h in dead]
        assert reasons == {f"{p}-4": "mapping_error", f"{p}-2": "schema_mismatch"}
        assert any("git_branch" in e and "missing" in e for e in errors), errors


def wal_lsn(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return str(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]


def wal_bytes_since(dsn: str, lsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", (lsn,))
        return int(row.fetchone()[0])  # type: ignore[index]


def slot_retained(dsn: str, slot: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        ).fetchone()
    assert row is not None, f"no slot {slot}"
    return int(row[0])


def test_a_quiet_table_in_a_busy_database_does_not_pin_the_wal(stack: StackInfo) -> None:
    """workflow_processes idle, another table writing ~150 MB of WAL: the heartbeat's
    action query moves the slot anyway, and replicator_replication_slot_lag_bytes shows it."""
    settings = stack.settings(target_table=unique("wr"), group_id=unique("g"))
    slot = settings.slot_name
    noise = unique("noise")
    with RunningReplicator(settings) as running:
        gauge = running.replicator.metrics.slot_lag_bytes.labels(slot)
        execute(stack.source_dsn, f'CREATE TABLE "{noise}" (id BIGINT, pad TEXT)')
        start = wal_lsn(stack.source_dsn)
        try:
            for _ in range(3):  # ~50 MB of WAL each, none of it for the connector's tables
                execute(
                    stack.source_dsn,
                    f'INSERT INTO "{noise}" SELECT g, repeat(md5(g::text), 6)'
                    " FROM generate_series(1, 200000) g",
                )
            written = wal_bytes_since(stack.source_dsn, start)
            assert written > 120 * 2**20, f"only {written} bytes of WAL written"
            deadline = time.monotonic() + 90  # a heartbeat every 10 s, then the next confirms
            while (retained := slot_retained(stack.source_dsn, slot)) > 16 * 2**20:
                assert time.monotonic() < deadline, f"the slot still retains {retained} bytes"
                time.sleep(1)
            wait_for(lambda: 0 <= gauge._value.get() < 16 * 2**20, timeout=30)
        finally:
            execute(stack.source_dsn, f'DROP TABLE "{noise}"')
    print(f"{written} bytes of WAL written; the slot retains {retained} bytes afterwards")
