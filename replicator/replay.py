"""``replicator replay``: rebuild a table from the change topic.

It reads every partition from the earliest offset and applies the events through exactly
the path of ``replicator run`` -- the same :class:`~replicator.consumer.Replicator`
(decode, :func:`~replicator.consumer.to_row_change`, dead-letter topic, the sink's order
guard, positions stored with the rows) -- with one difference, its consumer:

* no consumer group: partitions are ``assign()``-ed, nothing joins a group and nothing is
  committed to Kafka, so the live ``replicator run`` group is untouched;
* it stops when caught up: the exact end of every partition is probed before starting
  (:mod:`replicator.watermarks`; the local broker's high watermark cannot be trusted) and
  the replay stops once its stored positions reach those ends.  Events published later
  are left to whoever streams into the table next.

Targets:

* a shadow table (default ``<target>_replay``), emptied first (rows, versions and its
  positions) and created with the target's DDL and nine indexes when missing; its
  positions are stored under its own name in the positions table, so that ``--swap`` can
  hand them over;
* the live table itself (``--into <target>``): idempotent, the order guard skips every
  event older than what the table holds.  Its progress is kept in a separate positions
  table (``replicator_replay_offsets``) so that the live replicator's positions are never
  touched.

``--swap`` verifies the shadow table against the source (re-checking differences after
the replay caught up again), then swaps it in (:mod:`replicator.swap`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Consumer, Message, TopicPartition
from psycopg import sql

from replicator.consumer import Replicator
from replicator.errors import ConfigurationError, TargetUnavailable
from replicator.meter import Meter
from replicator.settings import Settings
from replicator.sink import PostgresSink
from replicator.verify import Options, verify
from replicator.verify_report import Report
from replicator.watermarks import (
    NotCaughtUp,
    PartitionEnd,
    caught_up,
    describe_lag,
    kafka_config,
    lagging,
    probe_ends,
    stored_positions,
)

log = logging.getLogger("replicator.replay")

REPLAY_OFFSETS = "replicator_replay_offsets"


class AssignOnlyConsumer:
    """The consumer a replaying :class:`Replicator` sees.  ``subscribe`` assigns every
    partition at once through the replicator's own ``on_assign`` (which positions them at
    the stored positions or the beginning); ``commit`` does nothing; ``stop`` is set once
    every partition has been read up to ``ends``.  Everything else is the real consumer."""

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        ends: Mapping[int, PartitionEnd],
        stop: threading.Event,
        meter: Meter,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._ends = ends
        self._stop = stop
        self._meter = meter
        self.read: dict[int, int | None] = {}  # next offset per partition, None: unknown
        self.events = 0

    def subscribe(self, topics: list[str], on_assign: Any = None, **_callbacks: Any) -> None:
        partitions = [TopicPartition(self._topic, p) for p in sorted(self._ends)]
        if on_assign is not None:
            on_assign(self, partitions)
        else:
            self.assign(partitions)
        self._check()

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.read[tp.partition] = tp.offset if tp.offset >= 0 else None
        self._consumer.assign(partitions)

    def seek(self, partition: TopicPartition) -> None:
        self.read[partition.partition] = partition.offset if partition.offset >= 0 else None
        self._consumer.seek(partition)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        messages = self._consumer.consume(num_messages=num_messages, timeout=timeout)
        self._seen(messages)
        return messages

    def poll(self, timeout: float = -1) -> Message | None:
        msg = self._consumer.poll(timeout)
        self._seen([] if msg is None else [msg])
        return msg

    def _seen(self, messages: list[Message]) -> None:
        n = 0
        for msg in messages:
            if msg.error() is None:
                p = msg.partition()
                self.read[p] = max(self.read.get(p) or 0, msg.offset() + 1)
                n += 1
        if n:
            self.events += n
            self._meter.advance(n)
        self._check()

    def commit(self, *args: Any, **kwargs: Any) -> None:
        """Nothing: a replay leaves no trace in any consumer group."""

    def _check(self) -> None:
        if caught_up(self.read, self._ends):
            self._stop.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


class _ReplayingReplicator(Replicator):
    """``replicator run``'s pipeline, fed by an :class:`AssignOnlyConsumer`."""

    def __init__(self, settings: Settings, ends: Mapping[int, PartitionEnd], meter: Meter):
        super().__init__(settings)
        self._ends = ends
        self._meter = meter
        self.reader: AssignOnlyConsumer | None = None

    def _make_consumer(self) -> Consumer:  # type: ignore[override]
        extra = {
            "fetch.max.bytes": 64 * 1024 * 1024,
            "queued.max.messages.kbytes": 128 * 1024,
            "auto.offset.reset": "earliest",
            "error_cb": self._on_kafka_error,
        }
        real = Consumer(
            {**kafka_config(self.settings.kafka_bootstrap, self.settings.kafka_config), **extra}
        )
        self.reader = AssignOnlyConsumer(
            real, self.settings.topic, self._ends, self.stop_event, self._meter
        )
        return self.reader  # type: ignore[return-value]


@dataclass
class ReplayReport:
    table: str
    events: int = 0  # events read (re-reads after an outage included)
    applied: int = 0
    deleted: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    verify: Report | None = None
    swapped: bool = False
    old_table: str | None = None
    ends: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> list[str]:
        lines = [
            f"replayed {self.events:,} events into {self.table} in {self.seconds:.1f}s"
            f" ({self.rate:,.0f} events/s): {self.applied:,} upserted, {self.deleted:,} deleted,"
            f" {self.dead_lettered:,} dead-lettered"
        ]
        if self.swapped:
            kept = f"kept as {self.old_table}" if self.old_table else "dropped"
            lines.append(f"swapped in: the previous table is {kept}")
        return lines


class Replay:
    """Replays the topic into ``table`` up to given ends; can be resumed to later ends."""

    def __init__(self, settings: Settings, table: str, meter: Meter | None = None) -> None:
        self.live = settings.target_table
        self.table = table
        offsets = REPLAY_OFFSETS if table == self.live else settings.offsets_table
        self.settings = settings.model_copy(
            update={"target_table": table, "offsets_table": offsets, "metrics_port": None}
        )
        self.meter = meter or Meter(enabled=False)
        self.report = ReplayReport(table)

    def reset(self) -> None:
        """Start from the earliest offsets: create the table when missing; a shadow is
        emptied, the live table only forgets this replay's earlier positions."""
        s = self.settings
        with PostgresSink(
            s.target_dsn.get_secret_value(), table=self.table, offsets_table=s.offsets_table
        ) as sink:
            for line in sink.ensure_schema():
                log.info(line)
            if self.table != self.live:
                sink.truncate([])
                return
        forget = sql.SQL("DELETE FROM {} WHERE target_table = %s").format(
            sql.Identifier(s.offsets_table)
        )
        try:
            with psycopg.connect(s.target_dsn.get_secret_value(), autocommit=True) as conn:
                conn.execute(forget, [self.table])
        except psycopg.Error as exc:
            raise TargetUnavailable(f"cannot reset the replay's positions: {exc}") from exc

    def run_to(self, ends: Mapping[int, PartitionEnd], timeout: float | None = None) -> None:
        """Apply every event below ``ends``; return once the stored positions reach them."""
        s = self.settings
        deadline = None if timeout is None else time.monotonic() + timeout
        started = time.monotonic()
        self.meter.start(f"replay {self.table}", sum(e.events for e in ends.values()), "events")
        stalled, previous = 0, None
        try:
            while True:
                stored = stored_positions(
                    s.target_dsn.get_secret_value(), s.offsets_table, self.table, s.topic
                )
                lag = lagging(stored, ends)  # type: ignore[arg-type]
                if not lag:
                    break
                stalled = stalled + 1 if stored == previous else 0
                if stalled >= 3 or (deadline is not None and time.monotonic() > deadline):
                    raise NotCaughtUp(f"replay of {self.table} is behind: {describe_lag(lag)}", lag)
                previous = stored
                self._run_once(ends)
        finally:
            self.meter.finish()
            self.report.seconds += time.monotonic() - started
            self.report.ends = {p: e.end for p, e in ends.items()}

    def _run_once(self, ends: Mapping[int, PartitionEnd]) -> None:
        replicator = _ReplayingReplicator(self.settings, ends, self.meter)
        replicator.run()
        tally = replicator.metrics.tally
        self.report.events += replicator.reader.events if replicator.reader else 0
        self.report.applied += tally.applied
        self.report.deleted += tally.deleted
        self.report.dead_lettered += tally.dead_lettered

    def catch_up(self, timeout: float) -> None:
        """Replay what was published since (verify's catch-up for a table nobody streams into)."""
        s = self.settings
        self.run_to(probe_ends(s.kafka_bootstrap, s.topic, s.kafka_config), timeout)


def shadow_name(live: str) -> str:
    return f"{live}_replay"


def replay(
    settings: Settings,
    *,
    into: str | None = None,
    swap: bool = False,
    drop_old: bool = False,
    meter: Meter | None = None,
    verify_options: Options | None = None,
    now: datetime | None = None,
) -> ReplayReport:
    """Rebuild ``into`` (default ``<target>_replay``) from the topic; swap it in on request."""
    from replicator.swap import old_name, plan_swap, swap_tables

    settings = settings.as_admin()  # it creates, empties and renames tables
    live = settings.target_table
    table = _identifier(into or shadow_name(live))
    if swap and table == live:
        raise ConfigurationError("--swap replays into a shadow table: drop --into or name another")
    old = old_name(live, now or datetime.now(UTC))
    if swap:
        plan_swap(live, table, old)  # names checked before any work
    meter = meter or Meter(enabled=False)
    job = Replay(settings, table, meter)
    job.reset()
    job.run_to(probe_ends(settings.kafka_bootstrap, settings.topic, settings.kafka_config))
    if not swap:
        return job.report
    job.report.verify = verify(
        settings, target_table=table, options=verify_options, catch_up=job.catch_up, meter=meter
    )
    if job.report.verify.status != "in_sync":
        return job.report
    swap_tables(
        settings.target_dsn.get_secret_value(),
        live=live,
        shadow=table,
        old=old,
        offsets_table=settings.offsets_table,
        drop_old=drop_old,
    )
    job.report.swapped = True
    job.report.old_table = None if drop_old else old
    return job.report


def _identifier(name: str) -> str:
    from replicator.settings import _IDENTIFIER

    if not _IDENTIFIER.match(name):
        raise ConfigurationError(
            f"table name {name!r} must be a plain SQL identifier: a letter or _, then"
            " letters, digits or _, at most 63 characters"
        )
    return name
