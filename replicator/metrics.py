"""Prometheus metrics of the pipeline, and a running tally for progress lines.

The metrics live in a registry of their own (not the process-global default), so
that several pipelines in one process (tests, replay beside run) do not collide.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Tally:
    """Counts since start, for the human progress line."""

    consumed: int = 0
    applied: int = 0
    deleted: int = 0
    stale: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tally = Tally()
        self.events = Counter(
            "replicator_events_consumed", "Change events consumed, by op", ["op"], registry=r
        )
        self.rows = Counter(
            "replicator_rows_applied", "Target rows written, by kind", ["kind"], registry=r
        )
        self.dead_letters = Counter(
            "replicator_events_dead_lettered",
            "Events sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self.skipped = Counter(
            "replicator_events_skipped",
            "Events deliberately not applied (tombstones, truncates, messages), by kind",
            ["kind"],
            registry=r,
        )
        self.batch_size = Histogram(
            "replicator_batch_events",
            "Events per applied batch",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 50000),
            registry=r,
        )
        self.apply_seconds = Histogram(
            "replicator_apply_seconds",
            "Time to apply one batch in the target database",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "replicator_end_to_end_lag_seconds",
            "Apply time minus the source commit time of the event",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.last_lsn = Gauge(
            "replicator_last_applied_lsn", "Source LSN of the newest applied event", registry=r
        )
        self.consumer_lag = Gauge(
            "replicator_consumer_lag",
            "Messages behind the high watermark, by partition",
            ["partition"],
            registry=r,
        )
        self.target_up = Gauge(
            "replicator_target_up", "1 when the last target operation succeeded", registry=r
        )
