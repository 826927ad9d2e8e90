"""The real local stack (PostgreSQL, tansu, Kafka Connect + Debezium) for integration tests.

One stack per test session, on free ports, under a temporary state folder; stopped
and removed at the end.  Tests isolate themselves by row-id prefix, target table
and consumer group, never by starting another stack.

Before a stack stops, every record its broker stored is held to Apache Kafka's
produce-side rules (:func:`apache_kafka_rules`): the local broker accepts records that
Apache Kafka refuses, and the suite must fail where a deployment would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from replicator.clients.connect import change_topic_config, load_connector_file
from replicator.db.schema import apply_target_schema, grant_to_service_role
from replicator.local.kafka_rules import check_topics
from replicator.local.sample import legacy_row
from replicator.local.stack import SERVICE_ROLE, LocalStack
from replicator.mapping.columns import SOURCE_COLUMNS, TARGET_COLUMNS
from replicator.mapping.rows import map_to_tuple
from replicator.settings import Settings
from replicator.stream.replicator import Replicator

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class StackInfo:
    """The stack's endpoints.  ``source_dsn``/``target_dsn`` are the tables' owner: tests
    play the application and the DBA with them.  The replicator under test runs as the
    least-privilege service role (schemas/roles.sql): ``service_*_dsn``."""

    source_dsn: str
    target_dsn: str
    service_source_dsn: str
    service_target_dsn: str
    bootstrap: str
    connect_url: str
    topic: str
    stack: LocalStack

    def with_target(self, owner_dsn: str) -> StackInfo:
        """This stack with another target database (``owner_dsn``: the owner's DSN)."""
        service = psycopg.conninfo.make_conninfo(owner_dsn, user=SERVICE_ROLE)
        return dataclasses.replace(self, target_dsn=owner_dsn, service_target_dsn=service)

    def settings(self, **overrides: object) -> Settings:
        """Settings for the replicator under test, as the service role; a ``target_table``
        of its own is created (as the owner) and granted to the role first."""
        values: dict[str, object] = {
            "source_dsn": self.service_source_dsn,
            "target_dsn": self.service_target_dsn,
            "admin_source_dsn": self.source_dsn,
            "admin_target_dsn": self.target_dsn,
            "kafka_bootstrap": self.bootstrap,
            "connect_url": self.connect_url,
            "topic": self.topic,
            "session_timeout_ms": 6000,
            "batch_max_ms": 50,
            "progress_interval_s": 5,
        }
        values.update(overrides)
        for side in ("source", "target"):  # a DSN given explicitly is used for everything
            if f"{side}_dsn" in overrides:
                values[f"admin_{side}_dsn"] = overrides.get(
                    f"admin_{side}_dsn", overrides[f"{side}_dsn"]
                )
        settings = Settings(**values)  # type: ignore[arg-type]
        if "target_table" in overrides and "target_dsn" not in overrides:
            prepare_table(self.target_dsn, settings.target_table, settings.offsets_table)
        return settings


def prepare_table(owner_dsn: str, table: str, offsets_table: str = "replicator_offsets") -> None:
    """What an operator does before running the replicator on a table of its own."""
    apply_target_schema(owner_dsn, table, offsets_table)
    grant_to_service_role(owner_dsn, SERVICE_ROLE, table, offsets_table)


def stack_state_dir() -> Path:
    """A fresh state folder for a test stack, outside pytest's temporary root.

    Run as root, the stack lets the postgres user traverse every parent of its folder;
    another pytest session starting meanwhile resets its own root (``pytest-of-<user>``)
    to mode 0700, which would cut a stack under it off from its data directory."""
    return Path(tempfile.mkdtemp(prefix="replicator-test-stack-"))


def apache_kafka_rules(bootstrap: str) -> None:
    """Fail when the broker at ``bootstrap`` stored a record Apache Kafka would have refused
    (replicator/local/kafka_rules.py)."""
    found = check_topics(bootstrap)
    if found:
        shown = "\n".join(f"  {v}" for v in found[:20])
        pytest.fail(f"{len(found)} records Apache Kafka would have refused:\n{shown}")


def create_change_topic(bootstrap: str, topic: str, partitions: int = 4) -> None:
    """Create ``topic`` as Kafka Connect creates the change topic (the connector file's
    ``topic.creation`` settings), before the first change: a consumer subscribed earlier
    would only see a topic Connect creates at its next metadata refresh."""
    config = change_topic_config(load_connector_file()["config"])
    for key in ("replication.factor", "partitions"):
        config.pop(key, None)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1, config=config)]).values():
        future.result(30)


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    state = stack_state_dir()
    local = LocalStack(state)
    try:
        env = local.up()
        yield StackInfo(
            source_dsn=env["REPLICATOR_ADMIN_SOURCE_DSN"],
            target_dsn=env["REPLICATOR_ADMIN_TARGET_DSN"],
            service_source_dsn=env["REPLICATOR_SOURCE_DSN"],
            service_target_dsn=env["REPLICATOR_TARGET_DSN"],
            bootstrap=env["REPLICATOR_KAFKA_BOOTSTRAP"],
            connect_url=env["REPLICATOR_CONNECT_URL"],
            topic=env["REPLICATOR_TOPIC"],
            stack=local,
        )
        apache_kafka_rules(env["REPLICATOR_KAFKA_BOOTSTRAP"])
    finally:
        local.down()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def target_dsn(stack: StackInfo) -> str:
    return stack.target_dsn


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def table(stack: StackInfo) -> str:
    """A fresh target table (with its indexes and state tables) for one test."""
    name = unique("wr")
    prepare_table(stack.target_dsn, name)
    return name


def mapped_source(dsn: str, where: str = "TRUE", params: tuple = ()) -> dict[str, tuple]:
    cols = ", ".join(SOURCE_COLUMNS)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT {cols} FROM workflow_processes WHERE {where}", params
        ).fetchall()
    out = {}
    for row in rows:
        values, _ = map_to_tuple(dict(zip(SOURCE_COLUMNS, row, strict=True)))
        out[values[0]] = values
    return out


JSON_COLUMNS = {
    "result_data",
    "error_details",
    "tags",
    "metadata",
    "progress_data",
    "resource_usage",
}


def target_rows(dsn: str, table: str, where: str = "TRUE", params: tuple = ()) -> dict[str, tuple]:
    cols = ", ".join(f"{c}::text" if c in JSON_COLUMNS else c for c in TARGET_COLUMNS)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f'SELECT {cols} FROM "{table}" WHERE {where}', params).fetchall()
    return {row[0]: tuple(row) for row in rows}


def diff(expected: dict[str, tuple], actual: dict[str, tuple]) -> str:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    changed = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    lines = [f"missing={len(missing)} extra={len(extra)} different={len(changed)}"]
    lines += [f"  missing {k}" for k in missing[:5]] + [f"  extra {k}" for k in extra[:5]]
    for k in changed[:5]:
        cols = [
            f"{c}: {e!r} != {a!r}"
            for c, e, a in zip(TARGET_COLUMNS, expected[k], actual[k], strict=True)
            if e != a
        ]
        lines.append(f"  {k}: {'; '.join(cols)}")
    return "\n".join(lines)


def wait_converged(
    stack: StackInfo, table: str, prefix: str, timeout: float = 60.0
) -> dict[str, tuple]:
    """Wait until the target rows with ``prefix`` equal the mapped source rows; return them."""
    like = (prefix + "%",)
    deadline = time.monotonic() + timeout
    while True:
        expected = mapped_source(stack.source_dsn, "id LIKE %s", like)
        actual = target_rows(stack.target_dsn, table, "run_id LIKE %s", like)
        if expected == actual:
            return actual
        if time.monotonic() > deadline:
            pytest.fail(f"target {table} did not converge on {prefix}*:\n{diff(expected, actual)}")
        time.sleep(0.5)


class RunningReplicator:
    """A :class:`Replicator` on a background thread, stopped like SIGTERM would."""

    def __init__(self, settings: Settings) -> None:
        self.replicator = Replicator(settings)
        self.error: BaseException | None = None
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.exit_code = self.replicator.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def __enter__(self) -> RunningReplicator:
        self.thread.start()
        return self

    def stop(self, timeout: float = 30) -> None:
        self.replicator.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "replicator did not stop"
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_topic(
    stack: StackInfo,
    topic: str | None = None,
    *,
    key_prefix: str | None = None,
    want: int | None = None,
    timeout: float = 60.0,
    idle_s: float = 3.0,
) -> list[tuple[bytes | None, bytes | None, list]]:
    """(key, value, headers) of the messages of ``topic`` (default: the change topic) from
    the start of every partition, those whose key id starts with ``key_prefix`` when given;
    until ``want`` were found, or else until nothing arrived for ``idle_s``."""
    topic = topic or stack.topic
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": unique("peek"),
            "enable.auto.commit": False,
        }
    )
    out: list[tuple[bytes | None, bytes | None, list]] = []
    try:
        deadline = time.monotonic() + timeout
        parts: dict = {}
        while not parts:  # Kafka Connect creates the topic at the first change it sends
            info = consumer.list_topics(topic, timeout=10).topics.get(topic)
            parts = info.partitions if info is not None and info.error is None else {}
            if not parts:
                assert time.monotonic() < deadline, f"topic {topic} was never created"
                time.sleep(0.5)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        idle = time.monotonic()
        while time.monotonic() < deadline and (want is None or len(out) < want):
            if want is None and time.monotonic() - idle > idle_s:
                break
            msg = consumer.poll(0.3)
            if msg is None or msg.error():
                continue
            idle = time.monotonic()
            key = msg.key()
            if key_prefix is not None and not (
                key and json.loads(key).get("id", "").startswith(key_prefix)
            ):
                continue
            out.append((key, msg.value(), msg.headers() or []))
    finally:
        consumer.close()
    return out


def new_database(stack: StackInfo, prefix: str) -> str:
    """A fresh database on the stack's cluster (owned by the tables' owner); its DSN."""
    name = unique(prefix)
    execute(stack.target_dsn, f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(stack.target_dsn, dbname=name)


def spawn_replicator(cli_env: dict[str, str], table: str, group: str) -> subprocess.Popen:
    """``replicator run`` as a process of its own, as an operator starts it."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "replicator", "run", "--log-format", "human"),
            *("--target-table", table, "--group-id", group),
        ],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def execute(dsn: str, *statements: str | tuple[str, tuple]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in statements:
            if isinstance(stmt, tuple):
                conn.execute(stmt[0], stmt[1])
            else:
                conn.execute(stmt)


@pytest.fixture
def cli_env(stack: StackInfo) -> dict[str, str]:
    """Environment for running ``replicator`` as a subprocess against the stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    env.update(
        REPLICATOR_SOURCE_DSN=stack.service_source_dsn,
        REPLICATOR_TARGET_DSN=stack.service_target_dsn,
        REPLICATOR_ADMIN_SOURCE_DSN=stack.source_dsn,
        REPLICATOR_ADMIN_TARGET_DSN=stack.target_dsn,
        REPLICATOR_KAFKA_BOOTSTRAP=stack.bootstrap,
        REPLICATOR_CONNECT_URL=stack.connect_url,
        REPLICATOR_TOPIC=stack.topic,
        REPLICATOR_SESSION_TIMEOUT_MS="6000",
        REPLICATOR_BATCH_MAX_MS="50",
        REPLICATOR_ENV_FILE=str(Path(os.devnull)),
    )
    return env


def churn_until(dsn: str, prefix: str, ids: int, stop: threading.Event, seed: int) -> int:
    """Updates (single and multi-row), deletes, re-inserts and new rows on ``prefix`` ids."""
    rng = random.Random(seed)
    done = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            rid = f"{prefix}-{rng.randrange(ids):08d}"
            r = rng.random()
            if r < 0.45:
                conn.execute(
                    "UPDATE workflow_processes SET status = %s, updated_at = now(),"
                    " total_cost = %s, result = %s WHERE id = %s",
                    (rng.choice(["running", "completed", None]), rng.random() * 1000, f"r{r}", rid),
                )
            elif r < 0.55:
                group = [f"{prefix}-{rng.randrange(ids):08d}" for _ in range(20)]
                conn.execute(
                    "UPDATE workflow_processes SET max_turns = %s, message = message || '+'"
                    " WHERE id = ANY(%s)",
                    (rng.randrange(100), group),
                )
            elif r < 0.75:
                conn.execute("DELETE FROM workflow_processes WHERE id = %s", (rid,))
            else:
                new = rid if r < 0.85 else f"{prefix}-new-{done}"
                conn.execute(
                    "INSERT INTO workflow_processes VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,"
                    "%s,%s,%s,%s) ON CONFLICT (id) DO NOTHING",
                    legacy_row(rng, new),
                )
            done += 1
    return done


@pytest.fixture(scope="session")
def own_stack() -> Iterator[object]:
    """The stack the tests break (tests/integration/own_stack.py)."""
    from tests.integration.own_stack import started_own_stack

    with started_own_stack() as own:
        yield own


def remove_slot(dsn: str, slot: str, timeout: float = 30.0) -> None:
    """Drop a test's replication slot once its connector's task released it; a slot still
    in use after ``timeout`` fails the test (a leaked slot holds WAL for the whole run)."""
    from replicator.db.slot import drop_slot

    if not drop_slot(dsn, slot, lambda _: None, wait_s=timeout):
        pytest.fail(f"replication slot {slot} still in use {timeout:g} s after its connector went")
