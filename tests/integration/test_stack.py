"""The local stack itself: Debezium events flow, `up` is idempotent, `down` stops everything."""

from __future__ import annotations

import json
import shutil

import pytest

from replicator.local.processes import pid_alive
from replicator.local.stack import LocalStack
from tests.integration.conftest import StackInfo, execute, read_topic, stack_state_dir, unique

pytestmark = pytest.mark.integration


def read_events(stack: StackInfo, prefix: str, want: int, timeout: float = 60) -> list[tuple]:
    """(id, parsed value) of every message whose key id starts with ``prefix``, in order."""
    found = read_topic(stack, key_prefix=prefix, want=want, timeout=timeout)
    return [(json.loads(k)["id"], json.loads(v) if v is not None else None) for k, v, _ in found]


def test_change_events_flow(stack: StackInfo) -> None:
    p = unique("ev")
    execute(
        stack.source_dsn,
        (
            "INSERT INTO workflow_processes (id, workflow_name, message) VALUES (%s, 'w', 'm')",
            (f"{p}-1",),
        ),
        (
            "INSERT INTO workflow_processes (id, workflow_name, message, max_turns, created_at,"
            " updated_at, status) VALUES (%s, 'w', 'm', NULL, NULL, NULL, NULL)",
            (f"{p}-null",),
        ),
        ("UPDATE workflow_processes SET status = 'done' WHERE id = %s", (f"{p}-1",)),
        ("DELETE FROM workflow_processes WHERE id = %s", (f"{p}-1",)),
    )
    events = read_events(stack, p, want=5)
    by_key: dict[str, list] = {}
    for key, value in events:
        by_key.setdefault(key, []).append(value)
    ops = [v["op"] if v else None for v in by_key[f"{p}-1"]]
    assert ops == ["c", "u", "d", None]  # the delete is followed by a tombstone
    (null_row,) = by_key[f"{p}-null"]
    after = null_row["after"]
    # replace.null.with.default=false: NULLs stay NULL instead of the column defaults
    assert after["max_turns"] is None
    assert after["created_at"] is None and after["status"] is None
    assert isinstance(null_row["source"]["lsn"], int)


def test_up_twice_is_harmless(stack: StackInfo) -> None:
    again = LocalStack(stack.stack.state_dir)
    before = {name: part["pid"] for name, part in again.status().items() if "pid" in part}
    settings = again.up()
    after = {name: part["pid"] for name, part in again.status().items() if "pid" in part}
    assert before == after
    assert settings["REPLICATOR_KAFKA_BOOTSTRAP"] == stack.bootstrap
    assert all(part["healthy"] for part in again.status().values())


def test_down_stops_every_process() -> None:
    local = LocalStack(stack_state_dir())
    local.up()
    try:
        status = local.status()
        assert all(part["healthy"] for part in status.values()), status
        pids = [
            (status["postgresql"]["pid"], str(local.pg_data)),
            (status["broker"]["pid"], "tansu"),
            (status["kafka-connect"]["pid"], "ConnectDistributed"),
        ]
    finally:
        stopped = local.down()
    assert len(stopped) == 3, stopped
    for pid, marker in pids:
        assert not pid_alive(pid, marker), f"{marker} (pid {pid}) still running"
    assert not any(part.get("healthy") for part in local.status().values())
    shutil.rmtree(local.state_dir, ignore_errors=True)
