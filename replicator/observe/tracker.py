"""What the replicator tells the outside world about its work: the metrics and health
of each applied batch, the progress lines, and the lag gauges (consumer lag per
partition, the source replication slot's retained WAL).  Called by the loop; it never
changes what is applied."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from replicator.db.connect import connect, first_line, mapped_errors
from replicator.errors import ReplicatorError
from replicator.events import ApplyResult
from replicator.mapping.columns import SOURCE_COLUMNS
from replicator.observe.metrics import GroupState, Health, Metrics, unassigned_hint
from replicator.settings import Settings

log = logging.getLogger("replicator.consumer")
_KNOWN = frozenset(SOURCE_COLUMNS)

SLOT_LAG = (
    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)"
    " FROM pg_replication_slots WHERE slot_name = %s"
)


class Applied(Protocol):
    """What the tracker reads of an applied batch."""

    events: int
    applied_at: float
    source_ts_ms: list[int]
    last_lsns: dict[int, int]


class Tracker:
    """Accounts for applied batches and refreshes the gauges, at most every few seconds."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        health: Health,
        redriven: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.settings = settings
        self.redriven = redriven  # dead letters re-driven, by outcome
        metrics.watch(health)
        self.metrics = metrics
        self.health = health
        self._last_observed = 0.0
        self._unmapped: set[str] = set()
        self._consumed: dict[str, int] = {}  # events consumed since progress(), by op
        self.assigned_at = 0.0
        self._last_progress = time.monotonic()
        self._progress_consumed = 0

    def applied(self, batch: Applied, result: ApplyResult, seconds: float) -> None:
        """One batch committed (``batch.applied_at``: wall clock), in ``seconds``."""
        m = self.metrics
        m.target_up.set(1)
        self.health.progressed()
        m.apply_seconds.observe(seconds)
        m.batch_size.observe(batch.events)
        m.rows.labels("upsert").inc(result.upserted)
        m.rows.labels("delete").inc(result.deleted)
        m.rows.labels("stale").inc(result.stale)
        applied_at = batch.applied_at
        m.end_to_end_seconds.observe_many(
            [max(0.0, applied_at - ts / 1000) for ts in batch.source_ts_ms]
        )
        if batch.last_lsns:
            m.last_lsn.set(max(batch.last_lsns.values()))
        t = m.tally
        t.consumed += batch.events
        t.applied += result.upserted
        t.deleted += result.deleted
        t.stale += result.stale
        t.batches += 1
        if result.behind_floor:
            m.skipped.labels("before_truncate").inc(result.behind_floor)
            t.skipped += result.behind_floor

    def _unassigned(self, now: float) -> None:
        """A member without partitions for longer than a join takes says so (each
        progress interval): the group, the topic, what to check; ``/readyz`` and
        ``replicator_unready{reason="no_partitions"}`` say it too."""
        s, group = self.settings, self.health.group_state
        waited = now - self.health.unassigned_since
        if self.health.assigned or waited < max(30.0, 3 * s.session_timeout_ms / 1000):
            return
        log.warning(
            "no partition assigned",
            extra={
                "waited_s": round(waited),
                "group": s.group_id,
                "topic": s.topic,
                "join_state": group.join_state if group else "?",
                "check": unassigned_hint(s.topic, group),
            },
        )

    def join_overdue(self, waited: float, idle_s: float) -> bool:
        """``run --exit-when-idle``: no partition came for ``waited`` seconds, longer than
        the join's own bound (the larger of ``idle_s``, 30 s and three session timeouts):
        said as an error; the member then exits."""
        s = self.settings
        if waited <= max(idle_s, 30.0, 3 * s.session_timeout_ms / 1000):
            return False
        log.error(
            "no partition assigned; exiting: the group did not give this member any"
            " partition (does the topic exist? does another member of the group hold"
            " them all?)",
            extra={"waited_s": round(waited), "group": s.group_id, "topic": s.topic},
        )
        return True

    def consumed(self, op: str) -> None:
        """One event of ``op`` consumed.  Per event, so it only counts: the counters
        are moved on by :meth:`progress`, on every turn of the loop."""
        self._consumed[op] = self._consumed.get(op, 0) + 1

    def _count_consumed(self) -> None:
        for op, n in self._consumed.items():
            self.metrics.events.labels(op).inc(n)
        self._consumed.clear()

    def columns(self, image: Mapping[str, Any] | None) -> None:
        """Count the columns of a row image the mapping does not read (added to the
        source after the mapping was written); each is logged once."""
        if image is None or len(image) <= len(_KNOWN):  # the hot path: one len()
            return  # (as many columns, one of them unknown: a mapped one is missing, and
            # the event is dead-lettered as schema_mismatch, naming it)
        for column in image.keys() - _KNOWN:
            self.metrics.unmapped_columns.labels(column).inc()
            if column not in self._unmapped:
                self._unmapped.add(column)
                log.warning(
                    "the source has a column the mapping does not read; it is ignored",
                    extra={"column": column},
                )

    def skipped(self, kind: str) -> None:
        self.metrics.skipped.labels(kind).inc()
        self.metrics.tally.skipped += 1

    def target_down(self) -> None:
        self.metrics.target_up.set(0)
        self.health.target_ok = False

    def target_back(self) -> None:
        self.metrics.target_up.set(1)
        self.health.progressed()

    def assigned(self, partitions: Iterable[int]) -> None:
        now = frozenset(partitions)
        if self.health.assigned and not now:
            self.health.unassigned_since = time.monotonic()
        self.health.assigned = now
        self.assigned_at = time.monotonic()  # joining a group is not being idle

    def observe(
        self,
        lag: Callable[[], Mapping[int, int]],
        ping: Callable[[], None],
        every_s: float = 5.0,
    ) -> None:
        """Refresh the lag gauges and the target's health (an idle stream must notice an
        outage too), at most every ``every_s`` seconds."""
        now = time.monotonic()
        if now - self._last_observed < every_s:
            return
        self._last_observed = now
        lags = lag()
        for p, n in lags.items():
            self.metrics.consumer_lag.labels(str(p)).set(n)
        self.health.lag = sum(lags.values())
        try:
            ping()
            self.health.target_ok = True
        except ReplicatorError:
            self.target_down()
        if self.settings.source_dsn is not None:
            self._observe_slot(self.settings.source_dsn.get_secret_value())
        if self.redriven is not None:
            for outcome, count in self.redriven().items():
                self.metrics.redriven.labels(outcome).set(count)

    def _observe_slot(self, dsn: str) -> None:
        """The slot's retained WAL, when the source lets us read pg_replication_slots."""
        try:
            with (
                connect(dsn, "the source database", connect_timeout=3) as conn,
                mapped_errors("read the replication slot's lag"),
            ):
                row = conn.execute(SLOT_LAG, (self.settings.slot_name,)).fetchone()
        except ReplicatorError as exc:
            log.debug("slot lag not readable", extra={"error": first_line(exc)})
            return
        if row and row[0] is not None:
            self.metrics.slot_lag_bytes.labels(self.settings.slot_name).set(float(row[0]))

    def progress(
        self, partitions: Iterable[int], force: bool = False, group: GroupState | None = None
    ) -> None:
        """The consumed counters, and a progress log line every ``progress_interval_s``
        (``force``: now); ``group``: the consumer group's state, when the client told."""
        if group is not None:
            self.health.group_state = group
        if self._consumed:
            self._count_consumed()
        now = time.monotonic()
        if not force and now - self._last_progress < self.settings.progress_interval_s:
            return
        self._unassigned(now)
        elapsed = max(now - self._last_progress, 1e-9)
        self._last_progress = now
        t = self.metrics.tally
        interval_events, self._progress_consumed = t.consumed - self._progress_consumed, t.consumed
        log.info(
            "progress",
            extra={
                "consumed": t.consumed,
                "upserted": t.applied,
                "deleted": t.deleted,
                "stale": t.stale,
                "dead_lettered": t.dead_lettered,
                "skipped": t.skipped,
                "batches": t.batches,
                "events_per_s": round(interval_events / elapsed, 1),
                "partitions": sorted(partitions),
            },
        )
