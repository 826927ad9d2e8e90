"""Bad input against the real stack: one clear line and exit 2, nothing lost.

The cases that need no services are in tests/unit/test_cli_input.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import psycopg
import pytest
from confluent_kafka import Producer

from replicator.local.processes import free_port
from tests.integration.conftest import (
    RunningReplicator,
    StackInfo,
    create_change_topic,
    mapped_source,
    read_topic,
    target_rows,
    unique,
)

pytestmark = pytest.mark.integration


def cli(env: dict[str, str], *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "replicator", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in res.stderr, res.stderr
    return res


def test_sample_twice_without_start_says_what_to_do(cli_env: dict[str, str]) -> None:
    start = str(10**7 + int(time.time() * 1000) % 10**6 * 10)
    assert cli(cli_env, "sample", "--rows", "3", "--start", start).returncode == 0
    res = cli(cli_env, "sample", "--rows", "3", "--start", start)
    assert res.returncode == 2 and "already exist" in res.stderr and "--start" in res.stderr


@pytest.mark.parametrize("command", [["sample", "--rows", "1"], ["backfill", "--no-slot-check"]])
def test_the_least_privilege_role_is_told_to_use_the_owner(
    cli_env: dict[str, str], command: list[str]
) -> None:
    env = cli_env | {
        "REPLICATOR_ADMIN_SOURCE_DSN": cli_env["REPLICATOR_SOURCE_DSN"],
        "REPLICATOR_ADMIN_TARGET_DSN": cli_env["REPLICATOR_TARGET_DSN"],
    }
    res = cli(env, *command)
    assert res.returncode == 2, res.stderr
    assert "tables' owner" in res.stderr and "REPLICATOR_ADMIN_" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_backfill_without_a_source_is_refused(cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if "SOURCE_DSN" not in k}
    res = cli(env, "backfill")
    assert res.returncode == 2 and "REPLICATOR_SOURCE_DSN" in res.stderr


def test_a_metrics_port_in_use_is_a_configuration_error(cli_env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = cli(cli_env, "run", "--metrics-port", str(port), "--exit-when-idle", "5")
    assert res.returncode == 2 and f"cannot serve /metrics on 0.0.0.0:{port}" in res.stderr


def test_replay_of_a_missing_table_or_topic_is_refused(cli_env: dict[str, str]) -> None:
    res = cli(cli_env, "replay", "--target-table", unique("nope"))
    assert res.returncode == 2 and "has no table" in res.stderr
    res = cli(cli_env | {"REPLICATOR_TOPIC": unique("no.such.topic")}, "replay")
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_run_without_a_broker_stops_when_idle_with_exit_1(cli_env: dict[str, str]) -> None:
    env = cli_env | {"REPLICATOR_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    started = time.monotonic()
    res = cli(env, "run", "--exit-when-idle", "2", timeout=60)
    assert res.returncode == 1, res.stderr
    assert time.monotonic() - started < 30
    lines = [json.loads(line) for line in res.stderr.splitlines()]  # every line is JSON
    assert any(line["msg"] == "not ready; giving up" for line in lines)


def test_a_large_undecodable_event_is_dead_lettered_whole_and_the_stream_goes_on(
    stack: StackInfo, table: str
) -> None:
    """A 5 MB event, in a topic that takes events up to 16 MiB as the change topic does
    (Apache Kafka refuses it on a topic with the broker's 1 MB default): its dead letter
    carries it whole, so it can be re-driven once fixed."""
    p = unique("big")
    topic = unique("bigsrc")
    create_change_topic(stack.bootstrap, topic, partitions=1)
    producer = Producer({"bootstrap.servers": stack.bootstrap, "message.max.bytes": 10_000_000})
    huge = b"x" * (5 * 1024 * 1024)  # not even JSON
    row = {
        "id": f"{p}-1",
        "workflow_name": "w",
        "message": "after the big one",
        "max_turns": None,
        "session_name": None,
        "git_branch": None,
        "repository_url": None,
        "created_at": None,
        "updated_at": None,
        "status": None,
        "result": None,
        "error_message": None,
        "execution_time": None,
        "total_cost": None,
        "started_at": None,
        "completed_at": None,
    }
    good = json.dumps({"op": "c", "after": row, "source": {"lsn": 1, "ts_ms": 1}}).encode()
    producer.produce(topic, key=b'{"id": "x"}', value=huge, partition=0)
    producer.produce(topic, key=json.dumps({"id": f"{p}-1"}).encode(), value=good, partition=0)
    assert producer.flush(30) == 0
    settings = stack.settings(target_table=table, group_id=unique("g"), topic=topic)
    with RunningReplicator(settings) as running:
        deadline = time.monotonic() + 60
        while not target_rows(stack.target_dsn, table, "run_id LIKE %s", (p + "%",)):
            assert time.monotonic() < deadline, running.replicator.metrics.tally
            time.sleep(0.3)
        assert running.replicator.metrics.tally.dead_lettered == 1
    assert mapped_source(stack.source_dsn, "id LIKE %s", (p + "%",)) == {}  # not a real row
    (dead,) = read_topic(stack, f"{topic}.dlq")
    headers = dict(dead[2])
    assert headers["dlq.reason"] == b"invalid_json" and headers["dlq.offset"] == b"0"
    assert dead[1] == huge and "dlq.value_bytes" not in headers


def test_run_as_a_role_that_does_not_exist_stops_with_exit_2(cli_env: dict[str, str]) -> None:
    """A refused login is not an outage: no retrying for ever."""
    dsn = psycopg.conninfo.make_conninfo(cli_env["REPLICATOR_TARGET_DSN"], user=unique("nobody"))
    res = cli(cli_env | {"REPLICATOR_TARGET_DSN": dsn}, "run", timeout=60)
    assert res.returncode == 2, res.stderr
    assert "does not exist" in res.stderr and "check the DSN" in res.stderr


def test_exit_when_idle_counts_from_the_assignment_not_the_join(
    cli_env: dict[str, str], table: str
) -> None:
    """Joining a group takes seconds on its own (about half the session timeout on the
    local broker): an idle bound shorter than that must not end a run with rows waiting."""
    env = cli_env | {
        "REPLICATOR_TARGET_TABLE": table,
        "REPLICATOR_GROUP_ID": unique("g"),
        "REPLICATOR_SESSION_TIMEOUT_MS": "10000",  # a first join of about 5 s
    }
    res = cli(env, "run", "--exit-when-idle", "2", timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "no partition assigned" not in res.stderr
    with psycopg.connect(cli_env["REPLICATOR_ADMIN_TARGET_DSN"]) as conn:
        (rows,) = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()  # type: ignore[misc]
    assert rows > 0  # the rows waiting in the topic were applied
