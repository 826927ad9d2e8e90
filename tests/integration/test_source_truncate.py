"""A source TRUNCATE applied to the target (``--on-truncate apply``) by the service role,
in its place in the order of the changes (stream/apply/truncation.py)."""

from __future__ import annotations

import json

import psycopg
import pytest
from confluent_kafka import Producer

from replicator.local.sample import insert_rows
from tests.integration.conftest import (
    RunningReplicator,
    StackInfo,
    execute,
    read_topic,
    target_rows,
    unique,
    wait_converged,
)
from tests.integration.isolated import isolated_source

pytestmark = pytest.mark.integration


def stored_partitions(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM replicator_offsets WHERE target_table = %s", [table]
        ).fetchone()
    return row[0] if row else 0


def test_a_source_truncate_is_applied_in_order_and_survives_a_restart(stack: StackInfo) -> None:
    with isolated_source(stack, "trn") as iso:  # a TRUNCATE must not touch other tests' rows
        table = unique("wr")
        settings = iso.settings(target_table=table, group_id=unique("g"), on_truncate="apply")
        insert_rows(iso.source_dsn, 40, prefix="a-")
        with RunningReplicator(settings):
            wait_converged(iso, table, "a-")
            execute(iso.source_dsn, "TRUNCATE workflow_processes")
            wait_converged(iso, table, "")  # applied: the target is empty
            # before any later change: the truncate stored its own partition's position
            # and left the other three as they were
            assert stored_partitions(iso.target_dsn, table) == 4
            insert_rows(iso.source_dsn, 30, prefix="b-")
            wait_converged(iso, table, "")  # the whole table: no a-, every b-
        insert_rows(iso.source_dsn, 5, prefix="c-")
        with RunningReplicator(settings):  # read on from the stored positions
            wait_converged(iso, table, "c-")
        assert target_rows(iso.target_dsn, table, "run_id LIKE %s", ("a-%",)) == {}
        wait_converged(iso, table, "", timeout=5)


def test_the_truncate_floor_is_kept_in_the_target_and_honoured_after_a_restart(
    stack: StackInfo,
) -> None:
    """An insert made before an applied TRUNCATE and read only after it (unread in another
    partition, re-sent by Connect, read by another member of the group) never brings its
    row back: the floor is stored with the truncate, and a new process honours it."""
    with isolated_source(stack, "trf") as iso:
        table = unique("wr")
        settings = iso.settings(target_table=table, group_id=unique("g"), on_truncate="apply")
        insert_rows(iso.source_dsn, 10, prefix="a-")
        with RunningReplicator(settings):
            wait_converged(iso, table, "a-")
            execute(iso.source_dsn, "TRUNCATE workflow_processes")
            wait_converged(iso, table, "")
        with psycopg.connect(iso.target_dsn) as conn:
            (floor,) = conn.execute(
                "SELECT source_lsn FROM replicator_truncated WHERE target_table = %s", [table]
            ).fetchone()  # type: ignore[misc]
        # an insert made before the truncate, of a row no change ever versioned, read now
        key, value, _ = next(m for m in read_topic(iso, key_prefix="a-") if m[1])
        ghost = json.loads(value)  # type: ignore[arg-type]
        envelope = ghost.get("payload", ghost)  # with or without schemas
        assert envelope["op"] == "c" and int(envelope["source"]["lsn"]) < floor
        envelope["after"]["id"] = "ghost-1"
        ghost_key = json.loads(key)  # type: ignore[arg-type]
        ghost_key.get("payload", ghost_key)["id"] = "ghost-1"
        producer = Producer({"bootstrap.servers": iso.bootstrap})
        producer.produce(iso.topic, key=json.dumps(ghost_key), value=json.dumps(ghost))
        assert producer.flush(10) == 0
        insert_rows(iso.source_dsn, 3, prefix="m-")  # made after: applied
        with RunningReplicator(settings) as running:  # a new process: nothing in memory
            wait_converged(iso, table, "m-")
            tally = running.replicator.metrics.tally
            wait_converged(iso, table, "", timeout=30)
        assert target_rows(iso.target_dsn, table, "run_id = %s", ("ghost-1",)) == {}
        assert tally.skipped >= 1
