"""Prometheus metrics of the pipeline, and a running tally for progress lines.

The metrics live in a registry of their own (not the process-global default), so
that several pipelines in one process (tests, replay beside run) do not collide.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any, NamedTuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from replicator.errors import DEAD_LETTER_REASONS, ConfigurationError


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


class BatchHistogram(Collector):
    """A histogram that takes a batch's values at once (:meth:`observe_many`).

    The end-to-end lag has one value per applied event: observed one at a time through
    prometheus_client's ``Histogram`` (a lock and a bucket search each), it took about a
    tenth of the consumer thread.  Here a batch costs one lock.  Exposed exactly as a
    ``Histogram`` of the same name and buckets (``_bucket{le}``, ``_count``, ``_sum``).
    """

    def __init__(
        self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = tuple(sorted(float(b) for b in buckets))
        self._counts = [0] * (len(self._bounds) + 1)  # the last one: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        counts = [0] * len(self._counts)
        bounds, total = self._bounds, 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1  # the first bound >= value: le
            total += value
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            running += count
            cumulative.append((str(floatToGoString(bound)), running))  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=total
        )


def _at_zero(counter: Counter, labels: Iterable[str]) -> None:
    """Each labelled series exists from the start, at 0: an alert on its increase then sees
    the first event (a series born at 1 has no increase to show)."""
    for label in labels:
        counter.labels(label)


class Metrics:
    _health: HealthCollector | None

    def watch(self, health: Health) -> None:
        """Expose ``health`` as ``replicator_unready{reason}`` (the latest one watched)."""
        if self._health is None:
            self._health = HealthCollector(health)
            self.registry.register(self._health)
        self._health.health = health

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._health = None
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
        _at_zero(self.dead_letters, DEAD_LETTER_REASONS)
        self.skipped = Counter(
            "replicator_events_skipped",
            "Events deliberately not applied (tombstones, truncates, messages, changes older"
            " than an applied truncate), by kind",
            ["kind"],
            registry=r,
        )
        self.unmapped_columns = Counter(
            "replicator_unmapped_columns",
            "Row images carrying a source column the mapping does not read, by column",
            ["column"],
            registry=r,
        )
        self.positions_reset = Counter(
            "replicator_positions_reset",
            "Stored positions set aside because the topic no longer holds them, by kind"
            " (topic_recreated, beyond_end, gap_accepted)",
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
        self.end_to_end_seconds = BatchHistogram(
            "replicator_end_to_end_lag_seconds",
            "Apply time minus the source commit time of the event",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self._gauges(r)

    def _gauges(self, r: CollectorRegistry) -> None:
        self.last_lsn = Gauge(
            "replicator_last_applied_lsn", "Source LSN of the newest applied event", registry=r
        )
        self.consumer_lag = Gauge(
            "replicator_consumer_lag",
            "Events not applied to the target yet (high watermark - applied), by partition",
            ["partition"],
            registry=r,
        )
        self.target_up = Gauge(
            "replicator_target_up", "1 when the last target operation succeeded", registry=r
        )
        self.redriven = Gauge(
            "replicator_dead_letters_redriven",
            "Dead letters `replicator dlq redrive` tried for this target table, by last outcome",
            ["outcome"],
            registry=r,
        )
        self.slot_lag_bytes = Gauge(
            "replicator_replication_slot_lag_bytes",
            "WAL bytes the source keeps for the connector's slot (current LSN - confirmed flush)",
            ["slot"],
            registry=r,
        )
        self.cut_over = Gauge(
            "replicator_cut_over",
            "1 while `replicator cutover` has closed the stream this consumer reads: it stays"
            " up idle (no partition, no batch) until `replicator rollback` reopens it; else 0",
            registry=r,
        )


class Health:
    """What ``/readyz`` answers: partitions assigned, target reachable, not stalled; or
    that a cutover closed the stream (``cut_over``, :func:`readiness`).

    The consumer updates it; the HTTP thread only reads it.  "Stalled" means no batch
    was applied for longer than ``stall_after_s`` while the consumer lag is above zero.
    """

    def __init__(self, stall_after_s: float, group: str = "", topic: str = "") -> None:
        self.stall_after_s = stall_after_s
        self.group, self.topic = group, topic
        self.cut_over: str | None = None  # what is true while a cutover closed the stream
        self.assigned: frozenset[int] = frozenset()
        self.unassigned_since = time.monotonic()  # when the member last had no partition
        self.target_ok = False
        self.lag = 0
        self.last_progress = time.monotonic()
        self.group_state: GroupState | None = None  # as the member's client last saw it

    def progressed(self) -> None:
        self.last_progress = time.monotonic()
        self.target_ok = True

    def problems(self) -> dict[str, str]:
        """Why the replicator is not ready, by kind (``UNREADY_KINDS``); empty when ready,
        and while cut over (:func:`readiness`): no partition, no lag, no batch is expected."""
        out: dict[str, str] = {}
        if self.cut_over is not None:
            return out
        if not self.assigned:
            waited = time.monotonic() - self.unassigned_since
            out["no_partitions"] = (
                f"no partitions assigned for {waited:.0f}s in group {self.group or '?'}"
                f" ({unassigned_hint(self.topic, self.group_state)})"
            )
        if not self.target_ok:
            out["target_unreachable"] = "target database unreachable"
        idle = time.monotonic() - self.last_progress
        if self.lag > 0 and idle > self.stall_after_s:
            out["stalled"] = f"stalled: lag {self.lag} and no batch applied for {idle:.0f}s"
        return out


class GroupState(NamedTuple):
    """The consumer group as the member's Kafka client sees it (librdkafka's statistics).

    ``join_state`` is ``steady`` in a stable group; ``wait-join``, ``wait-sync`` and the
    like while a rebalance is under way.  ``unsettled_s``: seconds since the member was
    last in a stable group (since it started, if never)."""

    join_state: str
    unsettled_s: float


def unassigned_hint(topic: str, group: GroupState | None = None) -> str:
    """Pure. What to check when a member of the group gets no partition, told apart by
    the group's state: a stable group that gave it nothing has enough members already; a
    rebalance that never completes is the broker's coordinator, which a new group id
    escapes (positions are in the target, so nothing is read twice or skipped)."""
    if group is not None and group.join_state == "steady":
        return (
            f"the group is stable and gave this member no partition: other members hold"
            f" every partition of {topic or '?'} (more members than partitions?)"
        )
    if group is not None and group.join_state not in ("", "init"):
        return (
            f"the group's rebalance has not completed for {group.unsettled_s:.0f}s (join"
            f" state {group.join_state}): a member slow to rejoin holds it up to its"
            " max.poll.interval.ms; longer than that, the broker's group coordinator has"
            " lost track of the group: give the members another REPLICATOR_GROUP_ID"
            " (positions are kept in the target: a new group resumes where this one"
            " stopped)"
        )
    return (
        f"does the topic {topic or '?'} exist? do other members of the group hold every"
        " partition? a member that left uncleanly holds its partitions until its session"
        " times out; a group whose coordinator lost track of it gets none: try another"
        " REPLICATOR_GROUP_ID"
    )


#: The reasons ``/readyz`` can give, as the ``reason`` label of ``replicator_unready``.
UNREADY_KINDS = ("no_partitions", "target_unreachable", "stalled")


class HealthCollector(Collector):
    """``replicator_unready{reason}``: 1 for each reason ``/readyz`` fails now (read at
    scrape time, so an alert sees the same answer as the probe)."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "replicator_unready",
            "1 for each reason /readyz fails: no_partitions, target_unreachable, stalled",
            labels=["reason"],
        )
        problems = self.health.problems()
        for kind in UNREADY_KINDS:
            family.add_metric([kind], 1.0 if kind in problems else 0.0)
        yield family


def readiness(health: Health) -> tuple[str, str]:
    """Pure. What ``/readyz`` answers: the HTTP status line and the body.

    200 ``ready`` while the consumer replicates; 503 with each reason while it cannot (no
    partition, the target unreachable, stalled).  A consumer whose stream a cutover
    closed answers **200**, ``cut over: ...`` with what is true and what to do.  It is
    doing its job, which is now nothing, and readiness is read as "works as it should"
    by everything that reads it.  A 503 would restart nothing (Kubernetes restarts on
    the liveness probe only), but it would page and block all the same: a cluster's
    standard alerts fire on a pod not ready for minutes (``KubePodNotReady``, a
    Deployment's ready replicas short of its desired ones), a rolling update
    (``maxUnavailable: 0``) waits for ever for a new pod that never becomes ready, and
    ``ReplicatorNotReady`` would fire.  So the state is told by the body, by the
    ``replicator_cut_over`` gauge and by the log, never by failing the probe; ``/healthz``
    (liveness) stays 200: the process is alive and answers."""
    if health.cut_over is not None:
        return "200 OK", f"cut over: {health.cut_over}"
    problems = list(health.problems().values())
    if problems:
        return "503 Service Unavailable", "\n".join(problems)
    return "200 OK", "ready"


def serve(port: int, metrics: Metrics, health: Health, host: str = "0.0.0.0") -> Callable[[], None]:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on a daemon thread; return a stopper."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            status, body = readiness(health)
            start_response(status, [("Content-Type", "text/plain")])
            return [body.encode() + b"\n"]
        if path == "/metrics":
            return list(metrics_app(environ, start_response))
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    try:
        server = make_server(host, port, app, Server, handler_class=QuietHandler)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve /metrics on {host}:{port}: {exc.strerror}; choose another"
            " --metrics-port (REPLICATOR_METRICS_PORT), or leave it unset"
        ) from exc
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop


@contextmanager
def served(
    port: int | None, metrics: Metrics, health: Health, host: str = "0.0.0.0"
) -> Iterator[None]:
    """Serve the endpoints (:func:`serve`) for the duration of the block; nothing when
    ``port`` is None."""
    if not port:
        yield
        return
    stop = serve(port, metrics, health, host)
    logging.getLogger("replicator.consumer").info(
        "serving /metrics, /healthz, /readyz", extra={"port": port}
    )
    try:
        yield
    finally:
        stop()
