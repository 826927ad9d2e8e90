"""The long-running consumer: poll -> decode -> map -> batch -> apply -> commit.

Invariants (the whole correctness argument, stated once):

1. The position of a partition moves only inside the sink's transaction that applies
   the rows its events produced (:meth:`PostgresSink.apply`).  Batches are applied by
   one worker thread, strictly in order, while the next batch is decoded; after a
   failed batch the worker discards the queued ones unapplied.  Kafka's committed
   offsets are written afterwards and are informational only.
2. On assignment, and after any failed apply, a partition is positioned at the
   offset stored in the target database (or the beginning when none is stored).
   So every event is applied at least once, and a re-applied event is harmless
   because the sink's order guard (source LSN per row) makes applying idempotent
   and keeps older images from overwriting newer rows.
3. An event that cannot be decoded or mapped is produced to the dead-letter topic,
   and the producer is flushed BEFORE the batch holding its position commits: a
   bad event is never lost, and never stops the stream.
4. A target outage discards the in-memory batch, pauses the partitions and retries
   with capped exponential backoff; when the target answers again, the partitions
   are re-positioned from the database and resumed.  Nothing is lost or skipped.
5. Positions are fenced (sink.py, invariant 5): when someone else moved the stored
   positions (``replicator replay --swap`` handing the shadow table's over, or a new owner
   of the partition), the batch rolls back with ``PositionsFenced``, a transient error,
   and the partitions are re-positioned from the database exactly as after an outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from replicator.errors import (
    BrokerUnavailable,
    EventError,
    ReplicatorError,
    TargetUnavailable,
    TransientError,
)
from replicator.events import ChangeEvent, KafkaPosition, Op
from replicator.mapping import map_to_tuple
from replicator.metrics import Health, Metrics, serve
from replicator.pipeline import ApplyWorker
from replicator.serde import decode_json
from replicator.settings import Settings
from replicator.sink import ApplyResult, PartitionPosition, PositionFence, PostgresSink, RowChange

log = logging.getLogger("replicator.consumer")

Decoder = Callable[[bytes | None, bytes | None, KafkaPosition], ChangeEvent | None]


@dataclass
class Batch:
    """Row changes waiting to be applied, and the positions they take the partitions to."""

    changes: list[RowChange] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)  # the message of each change
    next_offsets: dict[int, int] = field(default_factory=dict)
    last_lsns: dict[int, int] = field(default_factory=dict)
    source_ts_ms: list[int] = field(default_factory=list)
    events: int = 0
    bytes: int = 0
    started: float = 0.0
    dead_letters: int = 0
    applied_at: float = 0.0  # wall clock when its transaction committed

    def __len__(self) -> int:
        return self.events

    def advance(self, partition: int, offset: int, lsn: int | None) -> None:
        if not self.events:
            self.started = time.monotonic()
        self.events += 1
        self.next_offsets[partition] = offset + 1
        if lsn is not None:
            self.last_lsns[partition] = lsn


#: The order-guard version of a snapshot read.  Debezium stamps snapshot reads with the
#: snapshot's LSN, but a transaction in flight during the snapshot can have change LSNs
#: below it and still be streamed afterwards.  Streamed changes of one row are ordered
#: by their change LSN (row locks serialise them); a snapshot read only fills a row that
#: no streamed change has touched, and never overrides one.
SNAPSHOT_VERSION = 0


def to_row_change(event: ChangeEvent) -> RowChange | None:
    """The sink's view of one event (pure); None for ops that change no row."""
    if event.op in (Op.CREATE, Op.UPDATE, Op.READ):
        if event.after is None:  # serde guarantees an image; guard for other decoders
            raise EventError(f"{event.op.value} event without an 'after' image")
        values, unavailable = map_to_tuple(event.after)
        lsn = event.lsn
        if event.op is Op.READ:
            # incremental snapshot reads are de-duplicated against the stream by
            # Debezium's watermarks and carry no LSN: they apply unconditionally
            lsn = None if event.snapshot == "incremental" else SNAPSHOT_VERSION
        return RowChange(str(values[0]), lsn, False, values, unavailable)
    if event.op is Op.DELETE:
        return RowChange(str(event.key), event.lsn, True, None)
    return None


def dead_letter_headers(reason: str, error: str, msg: Message) -> list[tuple[str, bytes]]:
    headers = [
        ("dlq.reason", reason.encode()),
        ("dlq.error", error[:4000].encode("utf-8", "replace")),
        ("dlq.topic", str(msg.topic()).encode()),
        ("dlq.partition", str(msg.partition()).encode()),
        ("dlq.offset", str(msg.offset()).encode()),
    ]
    return headers + list(msg.headers() or [])


class Replicator:
    """A consumer-group member that keeps ``settings.target_table`` equal to the mapped source."""

    def __init__(
        self,
        settings: Settings,
        *,
        sink: PostgresSink | None = None,
        metrics: Metrics | None = None,
        decoder: Decoder | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.sink = sink or PostgresSink(
            settings.target_dsn.get_secret_value(),
            table=settings.target_table,
            offsets_table=settings.offsets_table,
            apply_deletes=settings.on_delete == "delete",
            fence=PositionFence(),  # positions move only from where this consumer left them
        )
        # positions and pings use their own connection: the sink's belongs to the worker
        self.control = PostgresSink(
            settings.target_dsn.get_secret_value(),
            table=settings.target_table,
            offsets_table=settings.offsets_table,
            fence=self.sink.fence,
        )
        self._worker: ApplyWorker[Batch, ApplyResult] | None = None
        self.decode: Decoder = decoder or self._decoder()
        self.stop_event = threading.Event()
        self.health = Health(settings.stall_after_s)
        self._last_observed = 0.0
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._assigned: set[int] = set()
        self._unpositioned: set[int] = set()
        self._batch = Batch()
        self._delivery_errors: list[str] = []
        self._last_progress = time.monotonic()
        self._progress_consumed = 0
        self._last_message = time.monotonic()

    # ---- construction --------------------------------------------------------------

    def _decoder(self) -> Decoder:
        if self.settings.value_format == "avro":
            from replicator.serde import AvroDecoder, registry_lookup

            assert self.settings.schema_registry_url is not None
            return AvroDecoder(registry_lookup(self.settings.schema_registry_url)).decode
        return decode_json

    def _kafka_common(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.settings.kafka_bootstrap, **self.settings.kafka_config}

    def _make_consumer(self) -> Consumer:
        return Consumer(
            {
                # tuning, which REPLICATOR_KAFKA_CONFIG may override
                "fetch.max.bytes": 64 * 1024 * 1024,
                # Kafka answers a fetch as soon as data arrives; this bounds how long an
                # idle fetch waits (and is the whole wait on brokers that answer only then)
                "fetch.wait.max.ms": 20,
                "topic.metadata.refresh.interval.ms": 5000,
                "queued.max.messages.kbytes": 64 * 1024,
                **self._kafka_common(),
                # what the guarantees rest on: never overridden
                "group.id": self.settings.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": self.settings.session_timeout_ms,
                "heartbeat.interval.ms": max(500, self.settings.session_timeout_ms // 5),
                "error_cb": self._on_kafka_error,
            }
        )

    def _make_producer(self) -> Producer:
        return Producer(
            {
                **self._kafka_common(),
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 30_000,
                "error_cb": self._on_kafka_error,
            }
        )

    def _ensure_dead_letter_topic(self) -> None:
        topic = self.settings.dead_letter_topic
        admin = AdminClient(self._kafka_common())
        try:
            existing = admin.list_topics(timeout=10).topics
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot list topics: {exc}") from exc
        if topic in existing:
            return
        futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1)])
        try:
            futures[topic].result(timeout=15)
            log.info("created dead-letter topic", extra={"topic": topic})
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                log.warning(
                    "could not create the dead-letter topic; it must exist or be auto-created",
                    extra={"topic": topic, "error": str(exc)},
                )

    # ---- Kafka callbacks -------------------------------------------------------------

    def _on_kafka_error(self, err: KafkaError) -> None:
        log.warning("kafka: %s", err.str(), extra={"code": err.name()})

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = {tp.partition for tp in partitions}
        self._assigned |= numbers
        try:
            stored = self.control.load_positions(self.settings.topic)
        except TransientError as exc:
            log.warning(
                "target unavailable at assignment; partitions wait paused",
                extra={"error": str(exc)},
            )
            consumer.assign(partitions)
            consumer.pause(partitions)
            self._unpositioned |= numbers
            return
        for tp in partitions:
            pos = stored.get(tp.partition)
            tp.offset = pos.next_offset if pos else OFFSET_BEGINNING
        consumer.assign(partitions)
        self.health.assigned = frozenset(self._assigned)
        log.info(
            "partitions assigned",
            extra={"positions": {tp.partition: tp.offset for tp in partitions}},
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Finish the batch in flight while the partitions are still ours; on failure it
        # is abandoned and the remaining partitions re-read from the stored positions.
        try:
            self._drain()
        except ReplicatorError as exc:
            log.warning("batch abandoned at revocation", extra={"error": str(exc)})
            self._abandon()
        lost = {tp.partition for tp in partitions}
        self._assigned -= lost
        self._unpositioned -= lost
        consumer.unassign()
        self.health.assigned = frozenset(self._assigned)
        log.info("partitions revoked", extra={"partitions": sorted(lost)})

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._abandon()
        lost = {tp.partition for tp in partitions}
        self._assigned -= lost
        self._unpositioned -= lost
        consumer.unassign()
        self.health.assigned = frozenset(self._assigned)
        log.warning("partitions lost", extra={"partitions": sorted(lost)})

    # ---- the loop ----------------------------------------------------------------------

    def run(self, *, exit_when_idle_s: float | None = None) -> int:
        """Replicate until :attr:`stop_event` is set (or idle that long); return an exit code."""
        stop_http = None
        if self.settings.metrics_port:
            stop_http = serve(
                self.settings.metrics_port, self.metrics, self.health, self.settings.metrics_host
            )
            log.info(
                "serving /metrics, /healthz, /readyz", extra={"port": self.settings.metrics_port}
            )
        try:
            if not self._start():
                return 0
            return self._run(exit_when_idle_s)
        finally:
            if stop_http is not None:
                stop_http()

    def _start(self) -> bool:
        """Schema and dead-letter topic, retried while the target or broker is down.

        False when asked to stop before they were ready."""
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                self.sink.ensure_schema()
                self.health.target_ok = True
                self._ensure_dead_letter_topic()
                return True
            except TransientError as exc:
                log.warning("not ready; retrying", extra={"error": str(exc), "backoff_s": backoff})
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, self.settings.retry_backoff_max_s)
        return False

    def _run(self, exit_when_idle_s: float | None) -> int:
        self._worker = ApplyWorker(self._apply_batch)
        self._consumer = consumer = self._make_consumer()
        self._producer = self._make_producer()
        consumer.subscribe(
            [self.settings.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "replicating",
            extra={
                "topic": self.settings.topic,
                "table": self.settings.target_table,
                "group": self.settings.group_id,
            },
        )
        backoff = 0.5
        try:
            while not self.stop_event.is_set():
                try:
                    if self._unpositioned:
                        self._reposition()
                    self._poll_once(consumer)
                    if self._batch_due():
                        self._submit()
                    self._collect()
                    backoff = 0.5
                except TransientError as exc:
                    if isinstance(exc, TargetUnavailable):
                        self.metrics.target_up.set(0)
                        self.health.target_ok = False
                    log.warning(
                        "unavailable; retrying", extra={"error": str(exc), "backoff_s": backoff}
                    )
                    self._abandon()
                    self._sleep(backoff)
                    backoff = min(backoff * 2, self.settings.retry_backoff_max_s)
                self._report_progress()
                self._observe()
                if (
                    exit_when_idle_s is not None
                    and not self._batch.events
                    and self._worker is not None
                    and self._worker.idle
                    and not self._unpositioned
                    and self._assigned
                    and time.monotonic() - self._last_message > exit_when_idle_s
                ):
                    log.info("idle; exiting", extra={"idle_s": exit_when_idle_s})
                    break
            try:
                self._drain()
            except ReplicatorError as exc:
                log.warning("last batch rolled back", extra={"error": str(exc)})
        finally:
            self._close()
        self._report_progress(force=True)
        return 0

    def _sleep(self, seconds: float) -> None:
        """Wait, while still serving group callbacks (the partitions are paused)."""
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            assert self._consumer is not None
            for msg in self._consumer.consume(100, timeout=0.2):
                # paused partitions deliver nothing new; anything already fetched is
                # dropped, because those partitions will be re-positioned from the database
                del msg

    def _poll_once(self, consumer: Consumer) -> None:
        busy = self._batch.events or (self._worker is not None and not self._worker.idle)
        timeout = 0.05 if busy else 0.5
        # poll returns with the first message; consume(timeout=0) then takes what is
        # already fetched (consume with a timeout would wait for a full 1000)
        first = consumer.poll(timeout)
        messages = [] if first is None else [first, *consumer.consume(999, timeout=0)]
        if messages:
            self._last_message = time.monotonic()
        batch = self._batch
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise BrokerUnavailable(f"consumer error: {err.str()}")
                # e.g. the topic does not exist yet: Debezium creates it with its first
                # event, and the subscription picks it up at the next metadata refresh
                log.warning("consumer: %s", err.str(), extra={"code": err.name()})
                continue
            partition = msg.partition()
            if partition in self._unpositioned or partition not in self._assigned:
                continue
            self._handle(msg, batch)
            if batch.events >= self.settings.batch_max_rows or (
                batch.bytes >= self.settings.batch_max_bytes
            ):
                self._submit()
                batch = self._batch

    def _handle(self, msg: Message, batch: Batch) -> None:
        partition, offset = msg.partition(), msg.offset()
        value = msg.value()
        batch.bytes += len(value) if value else 0
        try:
            event = self.decode(msg.key(), value, KafkaPosition(msg.topic(), partition, offset))
            if event is None:
                self.metrics.skipped.labels("tombstone").inc()
                self.metrics.tally.skipped += 1
                batch.advance(partition, offset, None)
                return
            self.metrics.events.labels(event.op.value).inc()
            if event.op is Op.TRUNCATE:
                self._truncate(event, batch, partition, offset)
                return
            change = to_row_change(event)
        except EventError as exc:
            self._dead_letter(msg, exc.reason, str(exc))
            batch.dead_letters += 1
            batch.advance(partition, offset, None)
            return
        if change is None:
            self.metrics.skipped.labels(event.op.name.lower()).inc()
            self.metrics.tally.skipped += 1
        else:
            batch.changes.append(change)
            batch.messages.append(msg)
            if event.source_ts_ms is not None:
                batch.source_ts_ms.append(event.source_ts_ms)
        batch.advance(partition, offset, event.lsn)

    def _truncate(self, event: ChangeEvent, batch: Batch, partition: int, offset: int) -> None:
        if self.settings.on_truncate == "apply":
            self._drain()  # everything before the truncate first
            batch = self._batch
            batch.advance(partition, offset, event.lsn)
            self.sink.truncate(self._positions(batch))
            log.warning("source TRUNCATE applied: target emptied", extra={"offset": offset})
            self._batch = Batch()
            return
        self.metrics.skipped.labels("truncate").inc()
        self.metrics.tally.skipped += 1
        log.warning(
            "source TRUNCATE not applied (on_truncate=ignore); the target keeps its rows",
            extra={"partition": partition, "offset": offset},
        )
        batch.advance(partition, offset, event.lsn)

    def _dead_letter(self, msg: Message, reason: str, error: str) -> None:
        assert self._producer is not None
        self._producer.produce(
            self.settings.dead_letter_topic,
            key=msg.key(),
            value=msg.value(),
            headers=dead_letter_headers(reason, error, msg),
            on_delivery=self._on_delivery,
        )
        self._producer.poll(0)
        self.metrics.dead_letters.labels(reason).inc()
        self.metrics.tally.dead_lettered += 1
        log.warning(
            "event dead-lettered",
            extra={
                "reason": reason,
                "partition": msg.partition(),
                "offset": msg.offset(),
                "dlq": self.settings.dead_letter_topic,
            },
        )

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(err.str())

    def _batch_due(self) -> bool:
        """Apply at once when the worker is free (latency); while it is busy the batch
        grows (throughput) until a limit is reached."""
        batch = self._batch
        if not batch.events:
            return False
        if self._worker is not None and self._worker.idle:
            return True
        return (time.monotonic() - batch.started) * 1000 >= self.settings.batch_max_ms

    def _positions(self, batch: Batch) -> list[PartitionPosition]:
        return [
            PartitionPosition(self.settings.topic, p, off, batch.last_lsns.get(p))
            for p, off in batch.next_offsets.items()
        ]

    def _submit(self) -> None:
        """Hand the batch to the apply worker; batches are applied strictly in order."""
        batch = self._batch
        if not batch.events:
            return
        self._batch = Batch()
        assert self._worker is not None
        self._worker.submit(batch)

    def _apply_batch(self, batch: Batch) -> ApplyResult:
        """On the worker: the batch and its positions in one target transaction (invariant 1)."""
        if batch.dead_letters:
            assert self._producer is not None
            if self._producer.flush(30) > 0 or self._delivery_errors:
                errors, self._delivery_errors = self._delivery_errors, []
                raise BrokerUnavailable(f"dead-letter delivery failed: {errors[:3]}")
        try:
            result = self.sink.apply(batch.changes, self._positions(batch))
        except EventError:
            result = self._apply_isolating(batch)
        batch.applied_at = time.time()
        return result

    def _collect(self, wait: bool = False) -> None:
        """Account for the batches the worker finished; raise the first failure."""
        if self._worker is None:
            return
        error: BaseException | None = None
        for done in self._worker.finished(wait):
            if done.error is not None:
                error = error or done.error
            elif done.result is not None:
                self._account(done.item, done.result, done.seconds)
        if error is not None:
            self._worker.finished(wait=True)  # the rest were discarded unapplied
            self._worker.reset()
            raise error

    def _drain(self) -> None:
        """Apply everything consumed so far and wait for it."""
        self._submit()
        self._collect(wait=True)

    def _account(self, batch: Batch, result: ApplyResult, elapsed: float) -> None:
        now = batch.applied_at
        m = self.metrics
        m.target_up.set(1)
        self.health.progressed()
        m.apply_seconds.observe(elapsed)
        m.batch_size.observe(batch.events)
        m.rows.labels("upsert").inc(result.upserted)
        m.rows.labels("delete").inc(result.deleted)
        m.rows.labels("stale").inc(result.stale)
        for ts in batch.source_ts_ms:
            m.end_to_end_seconds.observe(max(0.0, now - ts / 1000))
        if batch.last_lsns:
            m.last_lsn.set(max(batch.last_lsns.values()))
        t = m.tally
        t.consumed += batch.events
        t.applied += result.upserted
        t.deleted += result.deleted
        t.stale += result.stale
        t.batches += 1
        for run_id in result.unresolved:
            log.error(
                "update with unchanged TOASTed columns for a row missing from the target; "
                "resync it (replicator verify --repair)",
                extra={"run_id": run_id},
            )
        if self._consumer is not None:
            offsets = [
                TopicPartition(self.settings.topic, p, off) for p, off in batch.next_offsets.items()
            ]
            try:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:  # informational only (invariant 1)
                log.debug("kafka commit failed", extra={"error": str(exc)})

    def _apply_isolating(self, batch: Batch) -> ApplyResult:
        """The target rejected a change of the batch: find it by halving, dead-letter it.

        Sub-batches commit without positions (applying a change twice is harmless), and
        the positions commit last, after the dead-letter producer has been flushed.
        """
        counts = [0, 0, 0]
        unresolved: list[str] = []

        def apply(lo: int, hi: int) -> None:
            try:
                r = self.sink.apply(batch.changes[lo:hi], [])
            except EventError as exc:
                if hi - lo == 1:
                    self._dead_letter(batch.messages[lo], exc.reason, str(exc))
                    return
                mid = (lo + hi) // 2
                apply(lo, mid)
                apply(mid, hi)
                return
            counts[0] += r.upserted
            counts[1] += r.deleted
            counts[2] += r.stale
            unresolved.extend(r.unresolved)

        apply(0, len(batch.changes))
        assert self._producer is not None
        if self._producer.flush(30) > 0 or self._delivery_errors:
            raise BrokerUnavailable(f"dead-letter delivery failed: {self._delivery_errors[:3]}")
        self.sink.apply([], self._positions(batch))
        return ApplyResult(counts[0], counts[1], counts[2], tuple(unresolved))

    def _abandon(self) -> None:
        """Drop the batch in flight; its partitions re-read from the stored positions."""
        self._batch = Batch()
        if self._worker is not None:
            self._worker.finished(wait=True)  # whatever was queued: applied or discarded
            self._worker.reset()
        self._delivery_errors.clear()
        if self._consumer is not None and self._assigned:
            self._consumer.pause(self._partitions(self._assigned))
            self._unpositioned |= self._assigned

    def _partitions(self, numbers: set[int]) -> list[TopicPartition]:
        return [TopicPartition(self.settings.topic, p) for p in sorted(numbers)]

    def _reposition(self) -> None:
        """Seek the waiting partitions to their stored positions and resume them."""
        stored = self.control.load_positions(self.settings.topic)
        assert self._consumer is not None
        todo = sorted(self._unpositioned & self._assigned)
        for p in todo:
            pos = stored.get(p)
            offset = pos.next_offset if pos else OFFSET_BEGINNING
            try:
                self._consumer.seek(TopicPartition(self.settings.topic, p, offset))
            except KafkaException as exc:
                raise BrokerUnavailable(f"seek of partition {p} failed: {exc}") from exc
        self._consumer.resume(self._partitions(set(todo)))
        self._unpositioned.clear()
        self.metrics.target_up.set(1)
        self.health.progressed()
        log.info("partitions re-positioned from the target", extra={"partitions": todo})

    def _observe(self, every_s: float = 5.0) -> None:
        """Refresh the lag gauges: consumer lag per partition and the source slot's lag."""
        now = time.monotonic()
        if now - self._last_observed < every_s or self._consumer is None:
            return
        self._last_observed = now
        total = 0
        for p in sorted(self._assigned):
            tp = TopicPartition(self.settings.topic, p)
            try:
                _, high = self._consumer.get_watermark_offsets(tp, timeout=1, cached=False)
                (position,) = self._consumer.position([tp])
            except KafkaException:
                continue
            lag = max(0, high - position.offset) if position.offset >= 0 else high
            self.metrics.consumer_lag.labels(str(p)).set(lag)
            total += lag
        self.health.lag = total
        try:
            self.control.ping()  # an idle stream must notice a target outage too
            self.health.target_ok = True
        except ReplicatorError:
            self.health.target_ok = False
            self.metrics.target_up.set(0)
        if self.settings.source_dsn is not None:
            self._observe_slot()

    def _observe_slot(self) -> None:
        """The slot's retained WAL, when the source lets us read pg_replication_slots."""
        import psycopg

        try:
            with psycopg.connect(
                self.settings.source_dsn.get_secret_value(),  # type: ignore[union-attr]
                connect_timeout=3,
                autocommit=True,
            ) as conn:
                row = conn.execute(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)"
                    " FROM pg_replication_slots WHERE slot_name = %s",
                    (self.settings.slot_name,),
                ).fetchone()
        except psycopg.Error as exc:
            log.debug("slot lag not readable", extra={"error": str(exc).strip()})
            return
        if row and row[0] is not None:
            self.metrics.slot_lag_bytes.labels(self.settings.slot_name).set(float(row[0]))

    def _report_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < self.settings.progress_interval_s:
            return
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
                "partitions": sorted(self._assigned),
            },
        )

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.debug("consumer close: %s", exc)
            self._consumer = None
        if self._producer is not None:
            left = self._producer.flush(10)
            if left:
                log.error("dead-letter messages not delivered at exit", extra={"count": left})
            self._producer = None
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        self.sink.close()
        self.control.close()
