"""A source TRUNCATE applied to the target (``--on-truncate apply``) by the service role,
in its place in the order of the changes (stream/truncation.py)."""

from __future__ import annotations

import psycopg
import pytest

from replicator.local.sample import insert_rows
from tests.integration.conftest import (
    RunningReplicator,
    StackInfo,
    execute,
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
