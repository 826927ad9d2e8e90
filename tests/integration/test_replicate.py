"""`replicator run` on the real stack: every change arrives, once, in order, whatever happens.

Equality always means every column of every row: the target rows with a test's id
prefix equal the mapped source rows with that prefix.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from replicator.clients.connect import ConnectClient, load_connector_file
from replicator.db.schema import apply_target_schema
from replicator.local.sample import insert_rows, legacy_rows
from tests.integration.conftest import (
    RunningReplicator,
    StackInfo,
    execute,
    mapped_source,
    new_database,
    read_topic,
    remove_slot,
    spawn_replicator,
    target_rows,
    unique,
    wait_converged,
)

pytestmark = pytest.mark.integration


def churn(dsn: str, prefix: str, ids: int, changes: int, seed: int = 1) -> None:
    """Random inserts, updates (many per row) and deletes on rows ``<prefix>-<n>``."""
    rng = random.Random(seed)
    rows = list(legacy_rows(ids, seed=seed, prefix=f"{prefix}-"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        live: set[str] = set()
        for _ in range(changes):
            row = rows[rng.randrange(ids)]
            rid = row[0]
            if rid not in live:
                conn.execute(
                    "INSERT INTO workflow_processes VALUES "
                    "(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    row,
                )
                live.add(rid)
            elif rng.random() < 0.15:
                conn.execute("DELETE FROM workflow_processes WHERE id = %s", (rid,))
                live.discard(rid)
            else:
                conn.execute(
                    "UPDATE workflow_processes SET status = %s, updated_at = now(),"
                    " total_cost = %s, result = %s WHERE id = %s",
                    (
                        rng.choice(["running", "completed", None]),
                        rng.random() * 1000,
                        f"r{rng.random()}",
                        rid,
                    ),
                )


def test_streaming_inserts_updates_deletes(stack: StackInfo, table: str) -> None:
    p = unique("st")
    with RunningReplicator(stack.settings(target_table=table, group_id=unique("g"))):
        churn(stack.source_dsn, p, ids=60, changes=600)
        rows = wait_converged(stack, table, p)
    assert rows  # some rows survive the churn
    deleted = mapped_source(stack.source_dsn, "id LIKE %s", (p + "%",))
    assert set(rows) == set(deleted)


def test_null_row_keeps_nulls(stack: StackInfo, table: str) -> None:
    p = unique("nul")
    execute(
        stack.source_dsn,
        (
            "INSERT INTO workflow_processes (id, workflow_name, message, max_turns, created_at,"
            " updated_at, status) VALUES (%s, 'w', 'm', NULL, NULL, NULL, NULL)",
            (f"{p}-1",),
        ),
    )
    with RunningReplicator(stack.settings(target_table=table, group_id=unique("g"))):
        rows = wait_converged(stack, table, p)
    row = dict(
        zip(
            (
                "run_id",
                "workflow_type",
                "description",
                "user_id",
                "status",
                "priority",
                "max_turns",
                "session_id",
                "git_branch",
                "repository_url",
                "created_at",
                "updated_at",
            ),
            rows[f"{p}-1"][:12],
            strict=True,
        )
    )
    assert row["status"] == "pending" and row["priority"] == "normal"
    assert row["max_turns"] is None and row["created_at"] is None and row["updated_at"] is None
    assert row["session_id"] is None and row["user_id"] is None


def test_large_toasted_result_survives_status_update(stack: StackInfo, table: str) -> None:
    p = unique("toast")
    rid = f"{p}-1"
    execute(
        stack.source_dsn,
        (
            "INSERT INTO workflow_processes (id, workflow_name, message, result)"
            " SELECT %s, 'w', 'm', string_agg(md5(random()::text), '')"
            " FROM generate_series(1, 3000)",  # 96 KB of incompressible text: stored out of line
            (rid,),
        ),
    )
    with RunningReplicator(stack.settings(target_table=table, group_id=unique("g"))):
        wait_converged(stack, table, p)
        execute(
            stack.source_dsn,
            ("UPDATE workflow_processes SET status = 'done' WHERE id = %s", (rid,)),
        )
        rows = wait_converged(stack, table, p)
    with psycopg.connect(stack.target_dsn) as conn:
        (result,) = conn.execute(
            f"SELECT result_data::json->>'result' FROM \"{table}\" WHERE run_id = %s", (rid,)
        ).fetchone()
    assert len(result) == 96_000
    assert rows[rid][4] == "done"


@contextlib.contextmanager
def snapshot_connector(stack: StackInfo, p: str) -> Iterator[str]:
    """A connector of its own whose initial snapshot reads only the rows ``p-*`` (not what
    other tests left in the table); its topic.  Deleted, with its slot, afterwards."""
    name, prefix = unique("snapconn"), unique("snaptopic")
    config = {
        **load_connector_file()["config"],
        "topic.prefix": prefix,
        "slot.name": name,  # the publication of schemas/roles.sql is shared
        "snapshot.select.statement.overrides": "public.workflow_processes",
        "snapshot.select.statement.overrides.public.workflow_processes": (
            f"SELECT * FROM public.workflow_processes WHERE id LIKE '{p}-%'"
        ),
    }
    client = ConnectClient(stack.connect_url)
    client.put_config(name, config)
    try:
        client.wait_running(name, timeout=60)
        yield f"{prefix}.public.workflow_processes"
    finally:
        client.delete(name)
        remove_slot(stack.source_dsn, name)


def test_snapshot_of_existing_rows(stack: StackInfo, table: str) -> None:
    """Rows written before a connector exists arrive through its initial snapshot (op r)."""
    p = unique("snap")
    insert_rows(stack.source_dsn, 500, prefix=f"{p}-")
    with snapshot_connector(stack, p) as topic:
        settings = stack.settings(target_table=table, group_id=unique("g"), topic=topic)
        with RunningReplicator(settings):
            wait_converged(stack, table, p)
            # streaming continues after the snapshot, through the same path
            execute(
                stack.source_dsn,
                ("DELETE FROM workflow_processes WHERE id = %s", (f"{p}-00000007",)),
            )
            insert_rows(stack.source_dsn, 20, prefix=f"{p}-", start=500, seed=99)
            rows = wait_converged(stack, table, p)
        assert len(rows) == 519


def test_target_in_separate_database(stack: StackInfo) -> None:
    dsn = new_database(stack, "tgt")
    apply_target_schema(dsn)
    p = unique("sep")
    insert_rows(stack.source_dsn, 200, prefix=f"{p}-")
    settings = stack.settings(target_dsn=dsn, group_id=unique("g"))
    with RunningReplicator(settings):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if mapped_source(stack.source_dsn, "id LIKE %s", (p + "%",)) == target_rows(
                dsn, "workflow_runs", "run_id LIKE %s", (p + "%",)
            ):
                break
            time.sleep(0.5)
        else:
            pytest.fail("separate target did not converge")


def test_on_delete_ignore_keeps_rows(stack: StackInfo, table: str) -> None:
    p = unique("keep")
    insert_rows(stack.source_dsn, 10, prefix=f"{p}-")
    settings = stack.settings(target_table=table, group_id=unique("g"), on_delete="ignore")
    with RunningReplicator(settings):
        wait_converged(stack, table, p)
        execute(stack.source_dsn, ("DELETE FROM workflow_processes WHERE id LIKE %s", (p + "%",)))
        insert_rows(stack.source_dsn, 1, prefix=f"{p}-x", seed=3)
        # the insert after the deletes is applied, so the deletes were consumed too
        deadline = time.monotonic() + 30
        while not target_rows(stack.target_dsn, table, "run_id LIKE %s", (f"{p}-x%",)):
            assert time.monotonic() < deadline
            time.sleep(0.3)
    assert len(target_rows(stack.target_dsn, table, "run_id LIKE %s", (p + "%",))) == 11


def _events_for(stack: StackInfo, key_prefix: str) -> list:
    return [(k, v) for k, v, _ in read_topic(stack, key_prefix=key_prefix)]


def test_stale_redelivery_never_overwrites_newer_rows(stack: StackInfo, table: str) -> None:
    p = unique("stale")
    ids = [f"{p}-{n}" for n in range(5)]
    for rid in ids:
        execute(
            stack.source_dsn,
            (
                "INSERT INTO workflow_processes (id, workflow_name, message, status) "
                "VALUES (%s, 'w', 'first', 'pending')",
                (rid,),
            ),
        )
    for step in range(3):
        execute(
            stack.source_dsn,
            (
                "UPDATE workflow_processes SET message = %s, status = %s WHERE id LIKE %s",
                (f"v{step}", f"s{step}", p + "%"),
            ),
        )
    execute(stack.source_dsn, ("DELETE FROM workflow_processes WHERE id = %s", (ids[0],)))
    settings = stack.settings(target_table=table, group_id=unique("g"))
    with RunningReplicator(settings):
        before = wait_converged(stack, table, p)
        old = [(k, v) for k, v in _events_for(stack, p) if v is not None]
        assert len(old) >= 5 * 4 + 1
        producer = Producer({"bootstrap.servers": stack.bootstrap})
        for key, value in old:  # every old event again, after the newest was applied
            producer.produce(stack.topic, key=key, value=value)
        assert producer.flush(10) == 0
        # a marker change after the redelivered events: once it is applied, so are they
        marker = f"{p}-marker"
        execute(
            stack.source_dsn,
            (
                "INSERT INTO workflow_processes (id, workflow_name, message) VALUES (%s, 'w', 'm')",
                (marker,),
            ),
        )
        after = wait_converged(stack, table, p)
    assert {k: v for k, v in after.items() if k != marker} == before
    assert ids[0] not in after  # the old insert did not resurrect the deleted row


def test_malformed_messages_go_to_the_dead_letter_topic(stack: StackInfo, table: str) -> None:
    p = unique("dlq")
    insert_rows(stack.source_dsn, 6, prefix=f"{p}-")
    deadline = time.monotonic() + 60
    while len(valid := [(k, v) for k, v in _events_for(stack, p) if v is not None]) < 6:
        assert time.monotonic() < deadline, f"only {len(valid)} of 6 events arrived"
        time.sleep(0.5)
    assert len(valid) == 6
    topic = unique("dlqsrc")
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(10)
    good_envelope = json.loads(valid[0][1])
    bad_row = dict(good_envelope, after=dict(good_envelope["after"], id=f"{p}-bad", message=None))
    bad_row_key = json.dumps({"id": f"{p}-bad"}).encode()
    malformed = [
        (b'{"id":"x"}', b"not json at all"),
        (b'{"id":"x"}', b'{"op": "c"}'),
        (b'{"id":"x"}', json.dumps(dict(good_envelope, op="z")).encode()),
        (b"\xff\xfe", valid[1][1]),
        (bad_row_key, json.dumps(bad_row).encode()),  # NULL message: cannot be mapped
    ]
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    stream = [
        valid[0],
        malformed[0],
        valid[1],
        malformed[1],
        malformed[2],
        valid[2],
        malformed[3],
        valid[3],
        malformed[4],
        valid[4],
        valid[5],
    ]
    for key, value in stream:
        producer.produce(topic, key=key, value=value, partition=0)
    assert producer.flush(10) == 0
    settings = stack.settings(target_table=table, group_id=unique("g"), topic=topic)
    with RunningReplicator(settings) as running:
        rows = wait_converged(stack, table, p)
        deadline = time.monotonic() + 20
        while running.replicator.metrics.tally.dead_lettered < len(malformed):
            assert time.monotonic() < deadline, running.replicator.metrics.tally
            time.sleep(0.2)
    assert len(rows) == 6
    dead = read_topic(stack, f"{topic}.dlq")
    assert [v for _, v, _ in dead] == [v for _, v in malformed]
    reasons = [dict(h)["dlq.reason"].decode() for _, _, h in dead]
    assert all(reasons), reasons
    assert "mapping_error" in reasons[-1]
    for _, _, headers in dead:
        h = dict(headers)
        assert h["dlq.topic"].decode() == topic and h["dlq.partition"] == b"0"
        assert h["dlq.error"]


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    stack: StackInfo, table: str, cli_env: dict[str, str]
) -> None:
    p = unique("kill")
    group = unique("g")
    done = threading.Event()
    writer = threading.Thread(
        target=lambda: (churn(stack.source_dsn, p, ids=200, changes=3000, seed=5), done.set()),
        daemon=True,
    )
    writer.start()
    rng = random.Random(11)
    kills = 0
    while kills < 5:
        proc = spawn_replicator(cli_env, table, group)
        time.sleep(rng.uniform(2.0, 6.0))
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    writer.join(120)
    assert done.is_set()
    proc = spawn_replicator(cli_env, table, group)
    try:
        wait_converged(stack, table, p, timeout=120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    with psycopg.connect(stack.target_dsn) as conn:
        (dupes,) = conn.execute(
            f'SELECT count(*) - count(DISTINCT run_id) FROM "{table}"'
        ).fetchone()
    assert dupes == 0


def test_sigterm_exits_cleanly(stack: StackInfo, table: str, cli_env: dict[str, str]) -> None:
    p = unique("term")
    proc = spawn_replicator(cli_env, table, unique("g"))
    try:
        insert_rows(stack.source_dsn, 50, prefix=f"{p}-")
        wait_converged(stack, table, p)
    finally:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0
    assert time.monotonic() - started < 10


def test_target_restart_mid_stream(stack: StackInfo, table: str) -> None:
    """The whole PostgreSQL cluster crashes and restarts while changes stream: nothing is lost."""
    p = unique("rst")
    settings = stack.settings(target_table=table, group_id=unique("g"), retry_backoff_max_s=2)
    with RunningReplicator(settings) as running:
        insert_rows(stack.source_dsn, 300, prefix=f"{p}-")
        # immediate: a crash; a fast shutdown would wait for Debezium's walsender
        stack.stack.restart_postgres("immediate")
        insert_rows(stack.source_dsn, 300, prefix=f"{p}-", start=300, seed=8)
        client = ConnectClient(stack.connect_url)
        name = load_connector_file()["name"]
        try:
            client.wait_running(name, timeout=30)
        except Exception:
            client.restart(name)
            client.wait_running(name, timeout=60)
        rows = wait_converged(stack, table, p, timeout=120)
        assert running.thread.is_alive()
    assert len(rows) == 600


def test_cli_reports_bad_settings(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, REPLICATOR_BATCH_MAX_ROWS="lots", REPLICATOR_TARGET_TABLE="x; drop")
    res = subprocess.run(
        [sys.executable, "-m", "replicator", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "batch_max_rows" in res.stderr and "target_table" in res.stderr
    assert "postgresql://" not in res.stderr  # settings errors never echo DSNs


def test_a_lock_held_on_the_target_longer_than_the_poll_interval(
    stack: StackInfo, table: str
) -> None:
    """A lane waiting on a lock (a migration, a long transaction on workflow_runs) must not
    take the consumer out of its group: the loop keeps polling with that lane's partitions
    paused, the apply gives up at the lock timeout and retries, and once the lock is gone
    everything converges; stopping meanwhile is bounded too."""
    p = unique("lock")
    insert_rows(stack.source_dsn, 20, prefix=f"{p}-")
    settings = stack.settings(
        target_table=table,
        group_id=unique("g"),
        kafka_config={"max.poll.interval.ms": 7000},
        apply_lock_timeout_s=12.0,  # longer than the poll interval
        batch_max_rows=5,
    )
    running = RunningReplicator(settings)
    lost: list[list[int]] = []
    running.replicator._on_lost = lambda parts: lost.append(parts)  # type: ignore[method-assign]
    revoked: list[list[int]] = []
    on_revoke = running.replicator._on_revoke

    def revoke(parts: list[int]) -> None:
        revoked.append(parts)
        on_revoke(parts)

    running.replicator._on_revoke = revoke  # type: ignore[method-assign]
    with running:
        wait_converged(stack, table, p)
        with psycopg.connect(stack.target_dsn) as locker:
            locker.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
            insert_rows(stack.source_dsn, 200, prefix=f"{p}-", start=20, seed=5)
            time.sleep(20)  # past the poll interval and a lock timeout, the lock still held
            assert running.replicator._assigned  # still a member
            locker.rollback()
        rows = wait_converged(stack, table, p)
        assert lost == [] and revoked == []  # never out of the group (leaving revokes)
        stopped = time.monotonic()
    assert time.monotonic() - stopped < 15
    assert len(rows) == 220


def test_a_snapshot_reads_old_timestamps_exactly(stack: StackInfo, table: str) -> None:
    """Debezium's snapshot reads timestamps through JDBC's Julian calendar before
    1582-10-15; the replicator gives back the source's values, and dead-letters (with their
    reason) the ones it cannot tell apart (1582-10-05 .. 1582-10-24), never a shifted
    value."""
    p = unique("old")
    rows = {
        f"{p}-1500": ("1500-06-01 12:00:00.123456", "1000-03-01 00:00:00"),
        f"{p}-0001": ("0001-01-01 00:00:00", "1582-10-04 23:59:59.999999"),
        f"{p}-late": ("1582-10-25 00:00:00", "2024-02-29 23:59:59.999999"),
        f"{p}-gap": ("2020-01-01 00:00:00", "1582-10-14 08:00:00"),
        f"{p}-reform": ("1582-10-15 00:00:00", None),
    }
    execute(
        stack.source_dsn,
        *[
            (
                "INSERT INTO workflow_processes (id, workflow_name, message, created_at,"
                " started_at) VALUES (%s, 'w', 'm', %s, %s)",
                (rid, created, started),
            )
            for rid, (created, started) in rows.items()
        ],
    )
    with snapshot_connector(stack, p) as topic:
        settings = stack.settings(target_table=table, group_id=unique("g"), topic=topic)
        with RunningReplicator(settings) as running:
            tally = running.replicator.metrics.tally
            deadline = time.monotonic() + 60
            while len(target_rows(stack.target_dsn, table, "run_id LIKE %s", (p + "%",))) < 3:
                assert time.monotonic() < deadline, "the snapshot did not arrive"
                time.sleep(0.5)
            deadline = time.monotonic() + 30
            while tally.dead_lettered < 2:
                assert time.monotonic() < deadline, "the ambiguous reads were not dead-lettered"
                time.sleep(0.3)
            counted = running.replicator.metrics.dead_letters.labels(
                "snapshot_timestamp"
            )._value.get()
    assert counted == 2
    with psycopg.connect(stack.target_dsn) as conn:
        got = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                f'SELECT run_id, created_at::text, started_at::text FROM "{table}"'
                " WHERE run_id LIKE %s",
                (p + "%",),
            )
        }
    with psycopg.connect(stack.source_dsn) as conn:
        want = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                "SELECT id, created_at::text, started_at::text FROM workflow_processes"
                " WHERE id LIKE %s AND id NOT IN (%s, %s)",
                (p + "%", f"{p}-gap", f"{p}-reform"),
            )
        }
    assert got == want and len(got) == 3


def test_a_partition_paused_when_lost_fetches_again_once_assigned(stack: StackInfo) -> None:
    """librdkafka keeps a pause across unassign and assign.  A member whose partitions
    were paused when it lost them (an abandoned batch: a SIGSTOP past the session timeout,
    a target outage) got them back paused and never fetched again, while /readyz said
    ready (the fault campaign's seed 7, bench/chaos.py)."""
    from confluent_kafka import Consumer, TopicPartition

    from replicator.clients.kafka import client_config
    from replicator.stream.source.consumer import KafkaSource
    from replicator.stream.source.ends import probe_ends

    insert_rows(stack.source_dsn, 20, prefix=f"{unique('pause')}-")
    ends = probe_ends(stack.bootstrap, stack.topic)
    partition = max(ends, key=lambda p: ends[p].end)
    config = client_config("group", stack.bootstrap, {}, **{"group.id": unique("pause")})
    source = KafkaSource(Consumer(config), stack.topic, stack.bootstrap)

    def first_message(timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if source.poll(0.5):
                return True
        return False

    try:
        source._assign([TopicPartition(stack.topic, partition)], lambda ps: {partition: 0})
        assert first_message()
        source.pause([partition])  # the loop pauses what it abandons ...
        source._consumer.unassign()  # ... and then the partition is lost
        source._assign([TopicPartition(stack.topic, partition)], lambda ps: {partition: 0})
        assert first_message(), "assigned again with a position, but still paused"
    finally:
        source.close()
