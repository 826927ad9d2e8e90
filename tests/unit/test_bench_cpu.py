"""The bench's CPU accounting: which part a process is, and a window's seconds per event."""

from __future__ import annotations

import os
import time

from bench.cpu import PARTS, CpuMeter, part_of, per_event


def test_each_process_is_counted_in_its_part() -> None:
    assert part_of(7, "python3", "python -m replicator run", replicator_pid=7) == "replicator"
    walsender = "postgres: walsender replicator_debezium 127.0.0.1(4) START_REPLICATION"
    assert part_of(8, "postgres", walsender, 7) == "PostgreSQL WAL sender (Debezium's slot)"
    assert part_of(9, "postgres", "postgres: app workflows 127.0.0.1(5) idle", 7) == (
        "PostgreSQL, the rest"
    )
    assert part_of(9, "postgres", "postgres: autovacuum worker workflows", 7) == (
        "PostgreSQL, the rest"
    )
    ours = "postgres: postgres workflows 127.0.0.1(5) COPY"
    assert part_of(9, "postgres", ours, 7, {9}) == "PostgreSQL, the replicator's sessions"
    assert part_of(8, "postgres", walsender, 7, {8}) == "PostgreSQL WAL sender (Debezium's slot)"
    assert part_of(10, "tansu", "tansu broker", 7) == "broker"
    assert part_of(11, "java", "java -cp ...", 7) == "Kafka Connect"
    assert part_of(12, "python3", "python -m replicator run", None) == "other"


def test_a_window_counts_what_each_process_spent_between_its_samples() -> None:
    meter = CpuMeter()
    meter.sample()
    started = time.time()
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # this process spends 0.2 s of CPU
        pass
    meter.sample()
    used = meter.used(started, time.time(), replicator_pid=os.getpid())
    assert 0.15 <= used["replicator"] <= 1.0
    figures = per_event(used, events=1000)
    assert figures["replicator"] == used["replicator"] / 1000 * 1e6
    assert figures["total"] == sum(figures[p] for p in PARTS)
    assert figures["cores_busy"] > 0
    assert per_event(used, 0) == {} and per_event({}, 10) == {}
