"""Measure the pipeline against this machine's own limits, all in one run.

    python bench/run.py                 # 200 000 rows on a fresh local stack
    python bench/run.py --rows 1000000  # the 1 M run
    python bench/run.py --env-file .replicator/stack/stack.env --rows 5000 --quick

Every figure is measured in this run, next to its baseline:

A  the plan's batch SQL inside the database (INSERT ... SELECT, nine indexes): rows/s
B  a bare confluent-kafka consumer reading the same events: events/s, MB/s
C  the consumer a team would write by hand (bench/peer.py) applying the same topic:
   events/s; and the edge cases (redelivery, replay, TOAST, poison row) through C and
   through the replicator's path: what each gets right
3  `replicator run` (a subprocess) applying the filled topic: events/s, 3/B, 3/A
4  decode + map + apply with the events already in memory: rows/s, 4/A
5  initial load of the existing rows: Debezium snapshot (and `replicator backfill`
   when present): seconds, ratio to A's time
6  source commit -> row applied, at fixed change rates: p50, p95, p99
7  `replicator replay` into a shadow table: events/s; `replicator verify`: seconds
8  peak RSS of the `replicator run` process

A, 3, C and 4 are measured together in each of ``--trials`` trials (3 by default): the
report shows every trial and, for each figure and ratio, the median.

Results go to bench/results/<UTC date-time>.json and .md, and a PNG chart. Nothing
here asserts on time: benchmarks report, tests check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cpu import PARTS, CpuMeter, per_event  # noqa: E402
from bench.peer import edge_cases, peer_run  # noqa: E402
from bench.stages import baseline_cpu, stage_costs, streaming_gc  # noqa: E402
from bench.stages import markdown as stages_markdown  # noqa: E402
from replicator.clients.connect import ConnectClient, load_connector_file  # noqa: E402
from replicator.clients.kafka import client_config  # noqa: E402
from replicator.db.connect import APPLICATION_NAME  # noqa: E402
from replicator.db.schema import apply_target_schema  # noqa: E402
from replicator.events import KafkaPosition  # noqa: E402
from replicator.local.sample import insert_rows  # noqa: E402
from replicator.local.stack import LocalStack  # noqa: E402
from replicator.mapping.columns import TARGET_COLUMNS  # noqa: E402
from replicator.observe.metrics import Metrics  # noqa: E402
from replicator.settings import Settings, read_env_file  # noqa: E402
from replicator.stream.apply.batch import Batch  # noqa: E402
from replicator.stream.apply.lanes import Lanes, lane_of  # noqa: E402
from replicator.stream.apply.sink import PostgresSink  # noqa: E402
from replicator.stream.apply.transform import to_row_change  # noqa: E402
from replicator.stream.replicator import Replicator  # noqa: E402
from replicator.stream.source.consumer import KafkaSource  # noqa: E402
from replicator.stream.source.decode import decode_json  # noqa: E402
from replicator.stream.source.ends import probe_ends  # noqa: E402

#: The plan's migration SQL in PostgreSQL dialect, with the mapping rulings.
BASELINE_SQL = """
INSERT INTO {table} (
    run_id, workflow_type, description, status, max_turns, session_id, git_branch,
    repository_url, created_at, updated_at, started_at, completed_at, result_data,
    error_details, execution_time_ms, total_cost, tags, metadata, progress_data, resource_usage)
SELECT id, workflow_name, message, COALESCE(status, 'pending'), max_turns, session_name,
    git_branch, repository_url, created_at, updated_at, started_at, completed_at,
    CASE WHEN result IS NOT NULL THEN json_build_object('result', result) ELSE '{{}}' END,
    CASE WHEN error_message IS NOT NULL THEN json_build_object('error', error_message)
         ELSE '{{}}' END,
    execution_time, round(total_cost::text::numeric, 4), '[]', '{{}}', '{{}}', '{{}}'
FROM workflow_processes WHERE id LIKE %s
"""


def log(line: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def count(dsn: str, table: str, prefix: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f'SELECT count(*) FROM "{table}" WHERE run_id LIKE %s', (prefix + "%",)
        ).fetchone()
    return int(row[0]) if row else 0


def fresh_table(dsn: str, name: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for t in (name, f"{name}_versions"):
            conn.execute(f'DROP TABLE IF EXISTS "{t}"')
        conn.execute("DELETE FROM replicator_offsets WHERE target_table = %s", (name,))
    apply_target_schema(dsn, name)
    return name


# ---- A: the in-database ceiling ------------------------------------------------------


def baseline_in_db(env: dict[str, str], prefix: str, rows: int) -> dict[str, float]:
    dsn = env["REPLICATOR_TARGET_DSN"]
    table = fresh_table(dsn, "bench_baseline")
    with psycopg.connect(dsn) as conn:
        cpu = baseline_cpu(conn)
        started = time.perf_counter()
        conn.execute(BASELINE_SQL.format(table=f'"{table}"'), (prefix + "%",))
        conn.commit()
        seconds = time.perf_counter() - started
        cpu = baseline_cpu(conn) - cpu
    assert count(dsn, table, prefix) == rows
    return {
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "backend_us_per_row": cpu / rows * 1e6,
    }


# ---- B: the broker's ceiling -----------------------------------------------------------


def read_topic(env: dict[str, str], prefix: str, rows: int, keep: bool) -> tuple[dict, list]:
    """Read the topic from the start until ``rows`` events of ``prefix`` were seen."""
    topic = env["REPLICATOR_TOPIC"]
    consumer = _raw_consumer(env)
    parts: dict = {}
    deadline = time.monotonic() + 120
    while not parts and time.monotonic() < deadline:  # Debezium creates it with its 1st event
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        parts = meta.partitions if meta is not None and meta.error is None else {}
        if not parts:
            time.sleep(0.5)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    marker = prefix.encode()
    seen = messages = total_bytes = 0
    kept: list[tuple[bytes | None, bytes | None, int, int]] = []
    deadline = time.monotonic() + 600
    first = last = time.perf_counter()
    while seen < rows and time.monotonic() < deadline:
        for msg in consumer.consume(1000, timeout=0.5):
            if msg.error():
                continue
            messages += 1
            total_bytes += len(msg.value() or b"") + len(msg.key() or b"")
            if msg.value() is not None and marker in (msg.key() or b""):
                seen += 1
                if keep:
                    kept.append((msg.key(), msg.value(), msg.partition(), msg.offset()))
        last = time.perf_counter()
    consumer.close()
    seconds = max(last - first, 1e-9)
    return {  # every message read counts: `replicator run` reads them all too
        "events": seen,
        "messages": messages,
        "seconds": seconds,
        "events_per_s": messages / seconds,
        "mb_per_s": total_bytes / seconds / 1e6,
    }, kept


# ---- 3 and 8: the replicator as users run it -----------------------------------------------


def replicator_run(env: dict[str, str], prefix: str, rows: int) -> dict[str, float]:
    dsn = env["REPLICATOR_TARGET_DSN"]
    table = fresh_table(dsn, "bench_run")
    topic = env["REPLICATOR_TOPIC"]
    ends = _topic_ends(env)
    events = sum(ends.values())  # read from offset 0: the local broker keeps every event
    child_env = {**os.environ, **env, "REPLICATOR_ENV_FILE": os.devnull}
    child_env["REPLICATOR_SESSION_TIMEOUT_MS"] = "6000"
    group = f"bench-{time.time_ns()}"
    command = ["run", "--target-table", table, "--group-id", group, "--exit-when-idle", "5"]
    logfile = Path(tempfile.mkstemp(prefix="bench-run-", suffix=".log")[1])
    meter = CpuMeter()
    meter.sample()
    # One session for the checks, not one per check: a new connection every 50 ms is a new
    # backend process each time, whose start-up took CPU from the pipeline it measures.
    # Not the replicator's role, so its backend counts with the rest of PostgreSQL.
    watcher = psycopg.connect(env.get("REPLICATOR_ADMIN_TARGET_DSN", dsn), autocommit=True)
    with watcher, logfile.open("w") as log_out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "replicator", *command],
            env=child_env,
            stdout=subprocess.DEVNULL,
            stderr=log_out,
        )
        peak_kib = 0
        try:
            # done when the positions it stored (with the rows) reach the topic's ends:
            # a primary-key lookup, not a count that would compete with the replicator
            sampled = time.monotonic()
            while proc.poll() is None and not _stored_reached(watcher, table, topic, ends):
                time.sleep(0.05)
                peak_kib = max(peak_kib, _hwm_kib(proc.pid))
                if time.monotonic() - sampled >= 0.5:  # every process's CPU time
                    meter.sessions.update(_sessions_of(watcher))
                    meter.sample()
                    sampled = time.monotonic()
            finished = time.time()
            meter.sample()
            proc.terminate()  # stops like an operator's SIGTERM: the idle wait is not work
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    # the clock starts when the partitions are assigned (joining the group is not the work)
    assigned = _log_time(logfile, "partitions assigned")
    logfile.unlink()
    seconds = max(finished - assigned, 1e-9)
    return {
        "rows": count(dsn, table, prefix),
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "peak_rss_mb": peak_kib / 1024,
        "cpu_us_per_event": per_event(meter.used(assigned, finished, proc.pid), events),
    }


def _sessions_of(conn: psycopg.Connection[Any]) -> list[int]:
    """The backends of the replicator's sessions (its connections name themselves)."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [APPLICATION_NAME]
    ).fetchall()
    return [pid for (pid,) in rows]


def _stored_reached(
    conn: psycopg.Connection[Any], table: str, topic: str, ends: dict[int, int]
) -> bool:
    stored = dict(
        conn.execute(
            "SELECT kafka_partition, next_offset FROM replicator_offsets"
            " WHERE target_table = %s AND topic = %s",
            (table, topic),
        ).fetchall()
    )
    return all(stored.get(p, 0) >= end for p, end in ends.items())


def _log_time(path: Path, message: str) -> float:
    """The epoch time of the first JSON log line with ``message``."""
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError):
            entry = json.loads(line)
            if entry["msg"] == message:
                return datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
    raise RuntimeError(f"{message!r} not found in the replicator's log")


def _hwm_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# ---- 4: the replicator's own work, no broker ------------------------------------------------


def in_memory(env: dict[str, str], events: list, batch_rows: int = 5000) -> dict[str, float]:
    dsn = env["REPLICATOR_TARGET_DSN"]
    table = fresh_table(dsn, "bench_memory")
    topic = env["REPLICATOR_TOPIC"]
    n = Settings.model_fields["apply_lanes"].default
    sinks = [PostgresSink(dsn, table=table) for _ in range(n)]
    # as in `replicator run`: decode and map here while each lane applies its partitions'
    # previous batch on its own connection
    lanes: Lanes[Batch, object] = Lanes(
        [lambda b, sink=sink: sink.apply(b.changes, b.positions()) for sink in sinks]
    )
    started = time.perf_counter()
    batches = [Batch(topic) for _ in sinks]
    with streaming_gc():  # the collector as `replicator run` sets it
        for key, value, partition, offset in events:
            lane = lane_of(partition, len(sinks))
            batch = batches[lane]
            event = decode_json(key, value, KafkaPosition(topic, partition, offset))
            change = to_row_change(event) if event else None
            if change is not None:
                batch.changes.append(change)
            batch.advance(partition, offset, event.lsn if event else None)
            if len(batch.changes) >= batch_rows:
                lanes.submit(lane, batch)
                batches[lane] = Batch(topic)
        for lane, batch in enumerate(batches):
            lanes.submit(lane, batch)
        failed = [f.error for f in lanes.finished(wait=True) if f.error is not None]
    seconds = time.perf_counter() - started
    lanes.close()
    for sink in sinks:
        sink.close()
    if failed:
        raise RuntimeError(f"applying failed: {failed[0]!r}")
    return {"rows": len(events), "seconds": seconds, "rows_per_s": len(events) / seconds}


# ---- 5: initial load -----------------------------------------------------------------------


def only_rows(pattern: str) -> dict[str, str]:
    """Connector settings restricting its snapshot to the rows whose id is LIKE ``pattern``."""
    table = "public.workflow_processes"
    return {
        "snapshot.select.statement.overrides": table,
        f"snapshot.select.statement.overrides.{table}": (
            f"SELECT * FROM {table} WHERE id LIKE '{pattern}'"
        ),
    }


def snapshot_load(env: dict[str, str], prefix: str, rows: int) -> dict[str, float]:
    """Register a second connector on the existing rows; time until the target has them all."""
    dsn = env["REPLICATOR_TARGET_DSN"]
    table = fresh_table(dsn, "bench_snapshot")
    name = f"bench_snap_{time.time_ns() % 10**9}"
    spec = load_connector_file()
    # its own slot and topic (the publication of schemas/roles.sql is shared); the snapshot
    # reads the bench's rows only, whatever else the stack's table holds
    config = {
        **spec["config"],
        "topic.prefix": name,
        "slot.name": name,
        **only_rows(f"{prefix}%"),
    }
    topic = f"{name}.public.workflow_processes"
    # created first, as the stream's topic is: a consumer subscribed to a topic not there
    # yet learns of its partitions only at later metadata refreshes, seconds apart
    admin = AdminClient({"bootstrap.servers": env["REPLICATOR_KAFKA_BOOTSTRAP"]})
    for future in admin.create_topics([NewTopic(topic, len(_topic_ends(env)), 1)]).values():
        future.result(30)
    settings = _settings(env, table, topic=topic)
    client = ConnectClient(env["REPLICATOR_CONNECT_URL"])
    replicator = Replicator(settings)
    thread = threading.Thread(target=replicator.run, daemon=True)
    started = time.perf_counter()
    client.put_config(name, config)
    thread.start()
    try:
        client.wait_running(name, timeout=120)  # a failed task fails the bench, not hangs it
        while count(dsn, table, prefix) < rows:
            time.sleep(0.2)
            if time.perf_counter() - started > 3600:
                raise RuntimeError("snapshot load did not finish within an hour")
        seconds = time.perf_counter() - started
    finally:
        replicator.stop_event.set()
        thread.join(60)
        client.delete(name)
        time.sleep(2)
        with psycopg.connect(env["REPLICATOR_SOURCE_DSN"], autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active",
                (name,),
            )
    return {"seconds": seconds, "rows_per_s": rows / seconds}


def backfill_load(env: dict[str, str], prefix: str, rows: int) -> dict[str, float] | None:
    if not _has_command("backfill"):
        return None
    dsn = env["REPLICATOR_TARGET_DSN"]
    table = fresh_table(dsn, "bench_backfill")
    started = time.perf_counter()
    res = _cli(env, "backfill", "--target-table", table, "--restart")
    seconds = time.perf_counter() - started
    if res.returncode != 0:
        return {"error": res.stderr[-500:]}  # type: ignore[dict-item]
    return {"seconds": seconds, "rows_per_s": rows / seconds, "rows": count(dsn, table, prefix)}


# ---- 6: latency ------------------------------------------------------------------------------


class Recorder:
    """Stands in for the end-to-end histogram and keeps every observation."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)

    def observe_many(self, values: list[float]) -> None:
        self.values.extend(values)


def latency(
    env: dict[str, str], prefix: str, total: int, rate: int, seconds: float
) -> dict[str, float]:
    dsn = env["REPLICATOR_TARGET_DSN"]
    table = fresh_table(dsn, f"bench_latency_{rate}")
    metrics = Metrics()
    sources: list[TimedSource] = []

    def source(settings: Settings) -> TimedSource:
        sources.append(TimedSource.group_member(settings))  # type: ignore[arg-type]
        return sources[-1]

    replicator = Replicator(_settings(env, table), metrics=metrics, source=source)
    thread = threading.Thread(target=replicator.run, daemon=True)
    thread.start()
    _wait_caught_up(replicator, lambda: count(dsn, table, prefix) >= total)
    recorder, applies, batches = Recorder(), Recorder(), Recorder()
    metrics.end_to_end_seconds = recorder  # type: ignore[assignment]
    metrics.apply_seconds = applies  # type: ignore[assignment]
    metrics.batch_size = batches  # type: ignore[assignment]
    ids = [f"{prefix}{n:08d}" for n in range(2000)]
    before = _topic_ends(env)
    delivered = sources[-1].delivered
    received = len(delivered)
    tail = TailConsumer(env, before)  # the broker alone: a bare consumer at the tail
    tail.start()
    sent = _write_at_rate(env["REPLICATOR_SOURCE_DSN"], ids, rate, seconds)
    time.sleep(3)
    tail.stop_event.set()
    replicator.stop_event.set()
    thread.join(60)
    tail.join(60)
    delivered = delivered[received:]
    if not recorder.values:
        return {"rate": rate, "changes": sent, "observed": 0}
    out: dict[str, Any] = {"rate": rate, "changes": sent, "observed": len(recorder.values)}
    out.update(_percentiles(recorder.values, ""))
    # the apply's share: one batch's transaction, and how many events a batch held
    out.update(_percentiles(applies.values, "apply_"))
    out["batch_events_mean"] = statistics.fmean(batches.values) if batches.values else 0.0
    # the capture's share: source commit -> the record handed to Connect's producer
    out.update(_percentiles(_capture_delays(env, before, _topic_ends(env)), "capture_"))
    # the broker's share: record produced -> handed to the replicator by librdkafka
    out.update(_percentiles(delivered, "broker_"))
    # the same records' delay to a bare consumer at the tail, in the same run: what the
    # broker costs whatever consumes it
    out.update(_percentiles(tail.delays, "bare_tail_"))
    out["stored_events"] = sum(before.values())
    return out


class TailConsumer(threading.Thread):
    """A bare consumer assigned at ``start`` (the topic's ends): ``now - record timestamp``
    of every record it receives until stopped."""

    def __init__(self, env: dict[str, str], start: dict[int, int]) -> None:
        super().__init__(daemon=True)
        # the replicator's own consumer tuning (fetch.wait.max.ms above all), no group
        config = client_config("reader", env["REPLICATOR_KAFKA_BOOTSTRAP"], {})
        config["fetch.wait.max.ms"] = client_config("group", "", {})["fetch.wait.max.ms"]
        self.consumer = Consumer(config)
        topic = env["REPLICATOR_TOPIC"]
        self.consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])
        self.delays: list[float] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                messages = self.consumer.consume(1000, timeout=0.2)
                now = time.time() * 1000
                for msg in messages:
                    if msg.error() is None and msg.value() is not None:
                        self.delays.append(max(0.0, (now - msg.timestamp()[1]) / 1000))
        finally:
            self.consumer.close()


class TimedSource(KafkaSource):
    """``replicator run``'s source as is, noting ``now - record timestamp`` of what it hands out."""

    def __init__(self, consumer: Consumer, topic: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(consumer, topic, *args, **kwargs)
        self.delivered: list[float] = []

    def poll(self, timeout: float) -> list[Any]:
        messages = super().poll(timeout)
        now = time.time() * 1000
        for msg in messages:
            if msg.value() is not None:
                self.delivered.append(max(0.0, (now - msg.timestamp()[1]) / 1000))
        return messages


def _percentiles(seconds: list[float], label: str) -> dict[str, float]:
    if len(seconds) < 2:
        return {}
    q = statistics.quantiles(sorted(seconds), n=100, method="inclusive")
    return {f"{label}p{p}_ms": q[p - 1] * 1000 for p in (50, 95, 99)}


def _topic_ends(env: dict[str, str]) -> dict[int, int]:
    """The exact end (next offset) of every partition of the change topic."""
    ends = probe_ends(env["REPLICATOR_KAFKA_BOOTSTRAP"], env["REPLICATOR_TOPIC"])
    return {p: e.end for p, e in ends.items()}


def _capture_delays(env: dict[str, str], start: dict[int, int], end: dict[int, int]) -> list[float]:
    """Record timestamp minus ``source.ts_ms`` (seconds) of the events between two ends."""
    topic = env["REPLICATOR_TOPIC"]
    consumer = _raw_consumer(env)
    consumer.assign([TopicPartition(topic, p, o) for p, o in start.items() if end[p] > o])
    remaining = sum(end[p] - o for p, o in start.items())
    delays: list[float] = []
    deadline = time.monotonic() + 120
    try:
        while remaining > 0 and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() or msg.offset() >= end[msg.partition()]:
                    continue
                remaining -= 1
                if msg.value() is None:
                    continue
                ts_ms = (json.loads(msg.value()).get("source") or {}).get("ts_ms")
                if ts_ms is not None:
                    delays.append(max(0.0, (msg.timestamp()[1] - ts_ms) / 1000))
    finally:
        consumer.close()
    return delays


def _raw_consumer(env: dict[str, str]) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": env["REPLICATOR_KAFKA_BOOTSTRAP"],
            "group.id": f"bench-raw-{time.time_ns()}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )


def _wait_caught_up(
    replicator: Replicator, loaded: Callable[[], bool], quiet_s: float = 3.0, timeout: float = 900
) -> None:
    """Until ``loaded()`` holds and nothing more was consumed for ``quiet_s``."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        consumed = replicator.metrics.tally.consumed
        if consumed != last:
            last, since = consumed, time.monotonic()
        elif time.monotonic() - since > quiet_s and loaded():
            return
        time.sleep(0.2)
    raise RuntimeError("the replicator did not catch up before the latency run")


def _write_at_rate(dsn: str, ids: list[str], rate: int, seconds: float) -> int:
    """UPDATEs of existing rows, ``rate`` per second, committed in small transactions."""
    per_tx = max(1, rate // 100)
    sent = 0
    with psycopg.connect(dsn) as conn:  # committed as an application does (synchronous)
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                for _ in range(per_tx):
                    conn.execute(
                        "UPDATE workflow_processes SET updated_at = now(), status = 'running'"
                        " WHERE id = %s",
                        (ids[sent % len(ids)],),
                    )
                    sent += 1
                conn.commit()
            time.sleep(0.002)
    return sent


# ---- 7: replay and verify --------------------------------------------------------------------


def replay_and_verify(env: dict[str, str], rows: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if _has_command("replay"):
        dsn = env["REPLICATOR_TARGET_DSN"]
        with psycopg.connect(dsn, autocommit=True) as conn:
            for t in ("bench_replay", "bench_replay_versions"):
                conn.execute(f'DROP TABLE IF EXISTS "{t}"')
            conn.execute("DELETE FROM replicator_offsets WHERE target_table = 'bench_replay'")
        events = settled_ends(env)  # the local broker keeps every event
        started = time.perf_counter()
        res = _cli(env, "replay", "--into", "bench_replay")
        seconds = time.perf_counter() - started  # includes the command's start
        out["replay"] = (
            {"events": events, "seconds": seconds, "events_per_s": events / seconds}
            if res.returncode == 0
            else {"error": res.stderr[-500:]}
        )
    if _has_command("verify") and out.get("replay", {}).get("seconds"):
        # the replayed table holds every change, and nothing streams into it
        started = time.perf_counter()
        res = _cli(
            env, "verify", "--target-table", "bench_replay", "--catch-up-timeout", "0", "--json"
        )
        seconds = time.perf_counter() - started
        verdict: dict[str, Any] = {"seconds": seconds, "exit_code": res.returncode}
        with contextlib.suppress(ValueError, KeyError, TypeError):
            report = json.loads(res.stdout)
            verdict.update(status=report["status"], rows=report["source"]["rows"])
        out["verify"] = verdict
    return out


def settled_ends(env: dict[str, str], quiet_s: float = 10.0, timeout: float = 600) -> int:
    """The topic's event count once it stopped growing for ``quiet_s``: replay reads to the
    ends it finds at its start, so changes still on their way (a loaded broker accepts
    Connect's records seconds late) would be missing from the table verify compares."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        events = sum(_topic_ends(env).values())
        if events != last:
            last, since = events, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(1)
    return last


def _has_command(name: str) -> bool:
    res = subprocess.run(
        [sys.executable, "-m", "replicator", name, "--help"], capture_output=True, timeout=60
    )
    return res.returncode == 0


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        env={**os.environ, **env, "REPLICATOR_ENV_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=3600,
    )


def _settings(env: dict[str, str], table: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "source_dsn": env["REPLICATOR_SOURCE_DSN"],
        "target_dsn": env["REPLICATOR_TARGET_DSN"],
        "kafka_bootstrap": env["REPLICATOR_KAFKA_BOOTSTRAP"],
        "topic": env["REPLICATOR_TOPIC"],
        "target_table": table,
        "group_id": f"bench-{time.time_ns()}",
        "session_timeout_ms": 6000,
        "progress_interval_s": 3600,
    }
    values.update(overrides)
    return Settings(**values)


# ---- report ------------------------------------------------------------------------------------


# ---- trials: A, run, C and in memory measured together, medians of the runs -------------

#: result key -> the figure its trials are ranked by
FIGURES = {
    "A_in_database": "rows_per_s",
    "run_replicator": "events_per_s",
    "C_peer": "events_per_s",
    "in_memory": "rows_per_s",
}
#: summary ratio -> (numerator, denominator), each figure of one trial
TRIAL_RATIOS = {
    "run/A": ("run_replicator", "A_in_database"),
    "run/C": ("run_replicator", "C_peer"),
    "in_memory/A": ("in_memory", "A_in_database"),
}


def trial(env: dict[str, str], prefix: str, rows: int, events: list) -> dict[str, Any]:
    """One measurement of each, back to back: the machine's other load is shared alike."""
    dsn = env["REPLICATOR_TARGET_DSN"]
    return {
        "A_in_database": baseline_in_db(env, prefix, rows),
        "run_replicator": replicator_run(env, prefix, rows),
        "C_peer": peer_run(env, fresh_table(dsn, "bench_peer"), _topic_ends(env)),
        "in_memory": in_memory(env, events),
    }


def medians(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the trial whose figure is the median (the lower one of an even count)."""
    out = {}
    for key, figure in FIGURES.items():
        ranked = sorted((t[key] for t in trials), key=lambda r: r[figure])
        out[key] = ranked[(len(ranked) - 1) // 2]
    return out


def trial_ratios(trials: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Each ratio within each trial (numerator and denominator measured together)."""
    return {
        name: [ratio(t[a][FIGURES[a]], t[b][FIGURES[b]]) for t in trials]
        for name, (a, b) in TRIAL_RATIOS.items()
    }


def cpu_ratios(trials: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Per trial: the replicator's CPU per event (microseconds); and over A's backend CPU
    per row (both measured in the trial) the CPU per event of the replicator's own
    sessions' backends (like for like: A's figure is its one backend) and of every
    PostgreSQL process but the WAL sender (autovacuum, checkpoints and the WAL writer
    included, which A's figure leaves out)."""
    own: list[float | None] = []
    sessions: list[float | None] = []
    backends: list[float | None] = []
    for t in trials:
        cpu = (t.get("run_replicator") or {}).get("cpu_us_per_event") or {}
        own.append(round(cpu["replicator"], 2) if cpu else None)
        a_row = (t.get("A_in_database") or {}).get("backend_us_per_row")
        sessions.append(ratio(cpu.get(PARTS[1]), a_row))
        everything = cpu.get(PARTS[1], 0.0) + cpu.get(PARTS[2], 0.0) if cpu else None
        backends.append(ratio(everything, a_row))
    return {
        "replicator_us_per_event": own,
        "pg_sessions/A": sessions,
        "pg_backends/A": backends,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    a = results["A_in_database"]["rows_per_s"]
    b = results["B_bare_consumer"]["events_per_s"]
    run = results["run_replicator"]["events_per_s"]
    mem = results["in_memory"]["rows_per_s"]
    snap = results["initial_load_snapshot"]["seconds"]
    a_time = results["A_in_database"]["seconds"]
    out: dict[str, Any] = {
        "run/B": ratio(run, b),
        "run/A": ratio(run, a),
        "run/C": ratio(run, results["C_peer"]["events_per_s"]),
        "in_memory/A": ratio(mem, a),
        "snapshot_time/A_time": ratio(snap, a_time),
        "peak_rss_mb": round(results["run_replicator"]["peak_rss_mb"], 1),
    }
    if results.get("trials"):  # the ratios as medians of each trial's own ratio
        per = {**trial_ratios(results["trials"]), **cpu_ratios(results["trials"])}
        for name, values in per.items():
            known = [v for v in values if v is not None]
            out[name] = statistics.median(known) if known else None
            out[f"{name} trials"] = values
    backfill = results.get("initial_load_backfill") or {}
    if backfill.get("seconds"):
        out["backfill_time/A_time"] = ratio(backfill["seconds"], a_time)
    replay = (results.get("replay_verify") or {}).get("replay") or {}
    if replay.get("events_per_s"):
        out["replay/B"] = ratio(replay["events_per_s"], b)
    return out


def markdown(report: dict[str, Any]) -> str:
    r, s = report["results"], report["summary"]
    lines = [
        f"Benchmark of {report['rows']} rows, {report['started']} on {report['machine']['cpu']}"
        f" ({report['machine']['cores']} cores, {report['machine']['memory_gib']} GiB).",
        "",
        "| measurement | figure | ratio |",
        "| --- | --- | --- |",
        f"| A in-database INSERT ... SELECT (ceiling) |"
        f" {r['A_in_database']['rows_per_s']:,.0f} rows/s | |",
        f"| B bare consumer (ceiling) | {r['B_bare_consumer']['events_per_s']:,.0f} events/s,"
        f" {r['B_bare_consumer']['mb_per_s']:.1f} MB/s | |",
        f"| `replicator run` | {r['run_replicator']['events_per_s']:,.0f} events/s |"
        f" run/B {s['run/B']}, run/A {s['run/A']} |",
        f"| C the consumer a team would write by hand | {r['C_peer']['events_per_s']:,.0f}"
        f" events/s | run/C {s['run/C']} |",
        f"| decode + map + apply, no broker | {r['in_memory']['rows_per_s']:,.0f} rows/s |"
        f" /A {s['in_memory/A']} |",
        f"| initial load, Debezium snapshot | {r['initial_load_snapshot']['seconds']:.1f} s |"
        f" time/A {s['snapshot_time/A_time']} |",
    ]
    backfill = r.get("initial_load_backfill") or {}
    if backfill.get("seconds"):
        lines.append(
            f"| initial load, `replicator backfill` | {backfill['seconds']:.1f} s |"
            f" time/A {s.get('backfill_time/A_time')} |"
        )
    for lat in r["latency"]:
        if lat.get("observed"):
            lines.append(
                f"| latency at {lat['rate']} changes/s, source commit -> row applied |"
                f" p50 {lat['p50_ms']:.0f} ms, p95 {lat['p95_ms']:.0f} ms,"
                f" p99 {lat['p99_ms']:.0f} ms | |"
            )
            shares = (
                ("capture_", "the capture: commit -> record produced by Connect"),
                ("broker_", "the broker: record produced -> received by the replicator"),
                (
                    "bare_tail_",
                    "the broker alone: record produced -> received by a bare consumer at"
                    f" the tail ({lat.get('stored_events', 0):,} events stored)",
                ),
            )
            for key, what in shares:
                if f"{key}p50_ms" in lat:
                    lines.append(
                        f"| of which {what} | p50 {lat[key + 'p50_ms']:.0f} ms,"
                        f" p95 {lat[key + 'p95_ms']:.0f} ms, p99 {lat[key + 'p99_ms']:.0f} ms | |"
                    )
            if "apply_p50_ms" in lat:
                lines.append(
                    f"| of which one batch's apply ({lat['batch_events_mean']:.0f} events"
                    f" per batch on average) | p50 {lat['apply_p50_ms']:.0f} ms,"
                    f" p95 {lat['apply_p95_ms']:.0f} ms, p99 {lat['apply_p99_ms']:.0f} ms | |"
                )
    rv = r.get("replay_verify") or {}
    if (rv.get("replay") or {}).get("events_per_s"):
        lines.append(
            f"| `replicator replay` of {rv['replay']['events']:,} events |"
            f" {rv['replay']['events_per_s']:,.0f} events/s |"
            f" /B {s.get('replay/B')} |"
        )
    if rv.get("verify"):
        lines.append(
            f"| `replicator verify` of {rv['verify'].get('rows', 0):,} rows |"
            f" {rv['verify']['seconds']:.1f} s ({rv['verify'].get('status', 'no report')},"
            f" exit {rv['verify']['exit_code']}) | |"
        )
    lines.append(f"| peak RSS of `replicator run` | {s['peak_rss_mb']} MB | |")
    trials = r.get("trials") or []
    if trials:
        lines += [
            "",
            f"A, `replicator run`, C and in memory were measured in {len(trials)} trials, back to"
            " back; the table shows each figure's median trial and each ratio's median over"
            " the trials' own ratios.",
            "",
            "| trial | A rows/s | run events/s | C events/s | in memory rows/s |"
            " run/A | run/C | in memory/A |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        per = trial_ratios(trials)
        for n, t in enumerate(trials):
            figures = " | ".join(f"{t[k][f]:,.0f}" for k, f in FIGURES.items())
            ratios = " | ".join(str(per[name][n]) for name in TRIAL_RATIOS)
            lines.append(f"| {n + 1} | {figures} | {ratios} |")
    lines += cpu_table(trials)
    if s.get("replicator_us_per_event") is not None:
        lines += [
            "",
            f"Medians over the trials: the replicator {s['replicator_us_per_event']} us of CPU"
            f" per event; per event / A's backend per row: the replicator's sessions'"
            f" backends {s.get('pg_sessions/A')}, every PostgreSQL process but the WAL"
            f" sender {s.get('pg_backends/A')}.",
        ]
    if r.get("stages"):
        a_rows = [(t.get("A_in_database") or {}).get("backend_us_per_row") for t in trials]
        known = [a for a in a_rows if a]
        lines += stages_markdown(r["stages"], statistics.median(known) if known else None)
    lines += ["", "| edge case | expected | C | replicator |", "| --- | --- | --- | --- |"]
    for case in r.get("edge_cases", {}).values():
        cells = (case["what"], case["expected"], case["C"], case["replicator"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cpu_table(trials: list[dict[str, Any]]) -> list[str]:
    """CPU microseconds per event of each part during each trial's `replicator run`."""
    cpus = [(t.get("run_replicator") or {}).get("cpu_us_per_event") or {} for t in trials]
    if not any(cpus):
        return []
    lines = [
        "",
        "CPU time per event while `replicator run` read the topic (microseconds; every"
        " process on the machine, from /proc):",
        "",
        "| trial | " + " | ".join(PARTS) + " | total | cores busy |",
        "| --- " * (len(PARTS) + 3) + "|",
    ]
    for n, cpu in enumerate(cpus):
        if cpu:
            cells = [f"{cpu[p]:.1f}" for p in (*PARTS, "total")]
            lines.append(f"| {n + 1} | {' | '.join(cells)} | {cpu['cores_busy']:.2f} |")
    return lines


def chart(report: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    r = report["results"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    bars = {
        "A in-DB SQL": r["A_in_database"]["rows_per_s"],
        "B bare consumer": r["B_bare_consumer"]["events_per_s"],
        "replicator run": r["run_replicator"]["events_per_s"],
        "C by hand": r["C_peer"]["events_per_s"],
        "in memory": r["in_memory"]["rows_per_s"],
        "backfill": (r.get("initial_load_backfill") or {}).get("rows_per_s", 0),
        "replay": ((r.get("replay_verify") or {}).get("replay") or {}).get("events_per_s", 0),
    }
    colors = ["#888", "#888", "#2a7", "#aaa", "#27a", "#a72", "#72a"]
    left.bar(list(bars), list(bars.values()), color=colors)
    left.set_ylabel("rows or events per second")
    left.set_title(f"Throughput, {report['rows']:,} rows")
    left.tick_params(axis="x", labelrotation=15)
    for lat in r["latency"]:
        if lat.get("observed"):
            right.bar(
                [f"{lat['rate']}/s p50", f"{lat['rate']}/s p95", f"{lat['rate']}/s p99"],
                [lat["p50_ms"], lat["p95_ms"], lat["p99_ms"]],
            )
    right.set_ylabel("milliseconds")
    right.set_title("Source commit -> row applied")
    right.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


@contextlib.contextmanager
def bench_stack(env_file: str | None, name: str) -> Iterator[dict[str, str]]:
    """The stack's settings: ``env_file``'s running stack, or a fresh one in a temporary
    folder, stopped and removed afterwards.  The bench creates its own tables, so every
    connection runs as the tables' owner (the admin DSNs)."""
    stack: LocalStack | None = None
    state = None
    try:
        if env_file:
            env = read_env_file(Path(env_file))
        else:
            state = Path(tempfile.mkdtemp(prefix=f"{name}-stack-"))
            stack = LocalStack(state, log=log)
            env = stack.up()
        for side in ("SOURCE", "TARGET"):
            env[f"REPLICATOR_{side}_DSN"] = env.get(
                f"REPLICATOR_ADMIN_{side}_DSN", env[f"REPLICATOR_{side}_DSN"]
            )
        yield env
    finally:
        if stack is not None:
            stack.down()
        if state is not None:
            shutil.rmtree(state, ignore_errors=True)


def write_report(
    stem: Path,
    report: dict[str, Any],
    markdown: Callable[[dict[str, Any]], str],
    chart: Callable[[dict[str, Any], Path], bool],
) -> None:
    """``stem``.json, .md and .png (when matplotlib is there); the Markdown printed too."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    stem.with_suffix(".md").write_text(text)
    drew = chart(report, stem.with_suffix(".png"))
    print(text)
    print(f"results: {stem}.json, .md" + (", .png" if drew else ""))


def pyplot() -> Any:
    """matplotlib's pyplot drawing to files, or None when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no chart (pip install matplotlib)")
        return None
    return plt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument(
        "--trials", type=int, default=3, help="runs of A, run, C and in memory (medians)"
    )
    parser.add_argument("--env-file", help="use a running stack instead of starting one")
    parser.add_argument("--rates", default="500,2000", help="change rates for the latency run")
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="10 s latency runs")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.latency_seconds = min(args.latency_seconds, 10.0)

    started = datetime.now(UTC)
    prefix = f"bench{started:%H%M%S}-"
    results: dict[str, Any] = {}
    with bench_stack(args.env_file, "bench") as env:
        log(f"machine: {machine()}")
        log(f"inserting {args.rows} legacy rows")
        insert_rows(env["REPLICATOR_SOURCE_DSN"], args.rows, prefix=prefix)
        log("waiting for Debezium to stream every row into the topic")
        _, events = read_topic(env, prefix, args.rows, keep=True)
        log("B: bare consumer")
        results["B_bare_consumer"], _ = read_topic(env, prefix, args.rows, keep=False)
        dsn = env["REPLICATOR_TARGET_DSN"]
        trials = results["trials"] = []
        for n in range(args.trials):
            log(f"trial {n + 1} of {args.trials}: A, replicator run, C, in memory")
            trials.append(trial(env, prefix, args.rows, events))
        results.update(medians(trials))
        results["edge_cases"] = edge_cases(dsn, lambda name: fresh_table(dsn, name))
        log("the replicator's stages, with the events in memory")
        topic = env["REPLICATOR_TOPIC"]
        results["stages"] = stage_costs(dsn, fresh_table(dsn, "bench_stages"), topic, events)
        del events
        log("5: initial load through a Debezium snapshot")
        results["initial_load_snapshot"] = snapshot_load(env, prefix, args.rows)
        log("5: initial load through replicator backfill")
        results["initial_load_backfill"] = backfill_load(env, prefix, args.rows)
        results["latency"] = []
        for rate in (int(r) for r in args.rates.split(",")):
            log(f"6: latency at {rate} changes/s for {args.latency_seconds:.0f} s")
            results["latency"].append(latency(env, prefix, args.rows, rate, args.latency_seconds))
        log("7: replay and verify")
        results["replay_verify"] = replay_and_verify(env, args.rows)
    report = {
        "started": started.isoformat(timespec="seconds"),
        "rows": args.rows,
        "machine": machine(),
        "columns": len(TARGET_COLUMNS),
        "results": results,
        "summary": summarize(results),
    }
    write_report(Path(args.out) / f"{started:%Y-%m-%dT%H%M%S}-{args.rows}", report, markdown, chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
