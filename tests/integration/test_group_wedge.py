"""A consumer group whose rebalance never completes, as the local stack's broker leaves
one when the group's leader leaves while the group is forming (found by the fault
campaign, seed 321257: a second member left during a rebalance, and the restarted
member got no partition for the rest of the run).

The broker's group coordinator keeps the departed leader as the group's leader, waits
for its SyncGroup for ever, and answers every other member's SyncGroup with
REBALANCE_IN_PROGRESS.  The replicator cannot mend a broker's group; it must say so, in
words that lead to the way out (another group id: positions live in the target), and
the way out must work."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from confluent_kafka import Consumer

from replicator.local.processes import free_port
from tests.integration.conftest import StackInfo, execute, unique, wait_converged

pytestmark = pytest.mark.integration


def _member(stack: StackInfo, group: str) -> Any:
    return Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": group,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1200,
            "enable.auto.commit": False,
        }
    )


def wedge(stack: StackInfo, group: str) -> None:
    """The sequence the campaign found, with bare clients: a stable leader, a second
    member joining (the group forms again, the joiner held 3 s by the coordinator), and
    the leader leaving cleanly before the group has formed."""
    leader = _member(stack, group)
    leader.subscribe([stack.topic])
    deadline = time.monotonic() + 60
    while not leader.assignment():
        assert time.monotonic() < deadline, "the first member never got its partitions"
        leader.poll(0.2)
    joiner = _member(stack, group)
    joiner.subscribe([stack.topic])
    until = time.monotonic() + 1.0
    while time.monotonic() < until:  # the joiner's JoinGroup reaches the coordinator
        joiner.poll(0.1)
        leader.poll(0.1)
    leader.close()  # LeaveGroup while the group forms
    joiner.close()


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


class Member:
    """``replicator run`` as an operator starts it, its log kept line by line."""

    def __init__(self, cli_env: dict[str, str], table: str, group: str) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "replicator", "run", "--log-format", "json"),
                *("--target-table", table, "--group-id", group),
                *("--metrics-port", str(self.port)),
            ],
            env={**cli_env, "REPLICATOR_PROGRESS_INTERVAL_S": "2"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def records(self, message: str) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("msg") == message:
                out.append(doc)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def test_a_group_whose_rebalance_never_completes_is_reported_and_a_new_group_resumes(
    stack: StackInfo, table: str, cli_env: dict[str, str]
) -> None:
    prefix = unique("wedge") + "-"
    execute(
        stack.source_dsn,
        (
            "INSERT INTO workflow_processes (id, workflow_name, message)"
            " SELECT %s || g, 'wedge', 'm' || g FROM generate_series(1, 20) g",
            (prefix,),
        ),
    )
    group = unique("wedged")
    wedge(stack, group)

    stuck = Member(cli_env, table, group)
    try:
        deadline = time.monotonic() + 90
        while not stuck.records("no partition assigned"):
            assert stuck.proc.poll() is None, "".join(stuck.lines[-20:])
            assert not stuck.records("partitions assigned"), (
                "the member got partitions: the broker no longer keeps a departed leader"
                " of a forming group, so this test and the README's paragraph on it can go"
            )
            assert time.monotonic() < deadline, "".join(stuck.lines[-20:])
            time.sleep(1)
        said = stuck.records("no partition assigned")[-1]
        assert said["group"] == group
        assert said["join_state"] not in ("steady", "init", "?"), said
        assert "rebalance has not completed" in said["check"], said
        assert "another REPLICATOR_GROUP_ID" in said["check"], said
        status, body = _readyz(stuck.port)
        assert status == 503 and "rebalance has not completed" in body, (status, body)
    finally:
        stuck.stop()

    fresh = Member(cli_env, table, unique("fresh"))  # what the report says to do
    try:
        wait_converged(stack, table, prefix, timeout=90)
    finally:
        fresh.stop()
    assert fresh.proc.returncode == 0, "".join(fresh.lines[-20:])
