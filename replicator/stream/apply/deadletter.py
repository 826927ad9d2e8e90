"""Dead letters: events the pipeline cannot use go to ``<topic>.dlq``, never lost.

Invariant: the dead-letter producer is flushed, and every delivery confirmed, BEFORE the
transaction that stores the position of a dead-lettered event commits
(:meth:`DeadLetters.confirm`); a failed delivery fails the batch, which is then re-read
from the stored positions.  So a bad event is never lost, and never stops the stream.

:class:`DeadLetteringSink` wraps the sink: when the target rejects a batch
(``EventError``, e.g. a value the column cannot hold), it finds the rejected changes by
halving, dead-letters them, leaves a hold in their place (transform.py) and applies the
rest.
"""

from __future__ import annotations

import logging
import threading
from contextlib import suppress
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from replicator.clients.kafka import EVENT_MAX_BYTES, LETTER_MAX_BYTES, client_config
from replicator.errors import BrokerUnavailable, EventError
from replicator.events import NOTHING_APPLIED, ApplyResult, RowChange
from replicator.observe.metrics import Metrics
from replicator.settings import Settings
from replicator.stream.apply.batch import Batch
from replicator.stream.apply.sink import PostgresSink
from replicator.stream.apply.transform import hold, is_hold

log = logging.getLogger("replicator.consumer")

#: The largest key or value a dead letter carries whole: every event the change topic
#: accepts, so a dead letter can always be re-driven.  A larger one (read from another
#: topic) is cut to this size and the headers say so (``dlq.value_bytes``: the original
#: size): it must still be dead-lettered, or its partition could never move.
MAX_DEAD_LETTER_BYTES = EVENT_MAX_BYTES

#: The dead-letter topic's configuration when the replicator creates it: a dead letter
#: waits for an operator for as long as it takes (no time or size retention, which would
#: drop letters nobody re-drove), a record as large as a letter is accepted, and keyless
#: letters (a source TRUNCATE's event has no key) are too: no compaction.
DEAD_LETTER_TOPIC_CONFIG = {
    "cleanup.policy": "delete",
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "max.message.bytes": str(LETTER_MAX_BYTES),
}


def dead_letter_headers(reason: str, error: str, msg: Any) -> list[tuple[str, bytes]]:
    """Pure. The original headers plus why (``dlq.reason``, ``dlq.error``) and where from."""
    headers = [
        ("dlq.reason", reason.encode()),
        ("dlq.error", error[:4000].encode("utf-8", "replace")),
        ("dlq.topic", str(msg.topic()).encode()),
        ("dlq.partition", str(msg.partition()).encode()),
        ("dlq.offset", str(msg.offset()).encode()),
    ]
    return headers + list(msg.headers() or [])


class DeadLetters:
    """The dead-letter topic's producer; counts every dead letter in ``metrics``."""

    def __init__(self, settings: Settings, metrics: Metrics, producer: Any = None) -> None:
        self.settings = settings
        self.topic = settings.dead_letter_topic
        self.metrics = metrics
        self._producer = producer
        self._errors: list[str] = []
        self._too_large: list[tuple[Any, bytes, list[tuple[str, bytes]]]] = []
        # The main thread sends (undecodable events), lane threads send (rejected rows)
        # and confirm: the producer's creation, its queue, the delivery callbacks' lists
        # and the tally change under this one lock.
        self._lock = threading.RLock()

    def ensure_topic(self) -> None:
        """Create the topic when missing (a broker that refuses is only warned about)."""
        s = self.settings
        admin = AdminClient(client_config("admin", s.kafka_bootstrap, s.kafka_config))
        try:
            existing = admin.list_topics(timeout=10).topics
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot list topics: {exc}") from exc
        if self.topic in existing:
            return
        futures = admin.create_topics(
            [
                NewTopic(
                    self.topic,
                    num_partitions=1,
                    replication_factor=-1,
                    config=DEAD_LETTER_TOPIC_CONFIG,
                )
            ]
        )
        try:
            futures[self.topic].result(timeout=15)
            log.info("created dead-letter topic", extra={"topic": self.topic})
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                log.warning(
                    "could not create the dead-letter topic; it must exist or be auto-created",
                    extra={"topic": self.topic, "error": str(exc)},
                )

    def send(self, msg: Any, reason: str, error: str) -> None:
        """Produce ``msg`` with the dead-letter headers (delivery confirmed by :meth:`confirm`).
        Thread-safe."""
        key, value = msg.key(), msg.value()
        headers = dead_letter_headers(reason, error, msg)
        for name, data in (("key", key), ("value", value)):
            if data is not None and len(data) > MAX_DEAD_LETTER_BYTES:
                headers.append((f"dlq.{name}_bytes", str(len(data)).encode()))
        with self._lock:
            if self._producer is None:
                s = self.settings
                config = client_config("producer", s.kafka_bootstrap, s.kafka_config)
                self._producer = Producer(config)
            self._produce(
                key[:MAX_DEAD_LETTER_BYTES] if key else key,
                value[:MAX_DEAD_LETTER_BYTES] if value else value,
                headers,
            )
            self.metrics.tally.dead_lettered += 1
        self.metrics.dead_letters.labels(reason).inc()
        log.warning(
            "event dead-lettered",
            extra={
                "reason": reason,
                "partition": msg.partition(),
                "offset": msg.offset(),
                "dlq": self.topic,
            },
        )

    def _produce(self, key: Any, value: Any, headers: list[tuple[str, bytes]]) -> None:
        assert self._producer is not None
        try:
            self._producer.produce(
                self.topic, key=key, value=value, headers=headers, on_delivery=self._delivered
            )
        except BufferError:  # the local queue is full: make room, once
            self._producer.poll(1.0)
            self._producer.produce(
                self.topic, key=key, value=value, headers=headers, on_delivery=self._delivered
            )
        self._producer.poll(0)

    def confirm(self, timeout: float = 30) -> None:
        """Every dead letter sent so far is delivered, or :class:`BrokerUnavailable`.

        A failed delivery fails every confirmation until :meth:`forget`: apply lanes
        confirm on their own threads, and the batch whose dead letter failed may not be
        the one that looks first.  A dead letter the broker refuses as too large is sent
        again without its value (the headers keep the reason, the origin and
        ``dlq.value_omitted``)."""
        with self._lock:
            if self._producer is None:
                return
            left = self._producer.flush(timeout)
            while self._too_large and not left:
                for key, size, headers in self._too_large:
                    self._produce(key, None, [*headers, ("dlq.value_omitted", size)])
                self._too_large.clear()
                left = self._producer.flush(timeout)
            errors = list(self._errors)
        if left > 0 or errors:
            raise BrokerUnavailable(
                f"dead-letter delivery failed ({left} undelivered): {errors[:3]}"
            )

    def forget(self) -> None:
        """A batch was abandoned: its events are read again, failed deliveries with them."""
        with self._lock:
            self._errors.clear()
            self._too_large.clear()

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                left = self._producer.flush(10)
                if left:
                    log.error("dead-letter messages not delivered at exit", extra={"count": left})
                self._producer = None

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            return
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and msg.value():
            size = str(len(msg.value())).encode()
            self._too_large.append((msg.key(), size, list(msg.headers() or [])))
        else:
            self._errors.append(err.str())


#: The reason of a partial update (unchanged TOASTed columns not sent) for a row the
#: target does not have: it cannot be completed, so it is not applied.
UNRESOLVED = "partial_update_missing_row"  # one of errors.DEAD_LETTER_REASONS


class DeadLetteringSink:
    """The sink, wrapped: a batch is applied with its positions; dead letters of the
    batch are confirmed first; changes the target rejects, and partial updates of rows
    the target lacks (:data:`UNRESOLVED`), are dead-lettered, confirmed before the
    batch's positions commit."""

    def __init__(self, sink: PostgresSink, dead_letters: DeadLetters) -> None:
        self.sink = sink
        self.dead_letters = dead_letters

    def apply(self, batch: Batch) -> ApplyResult:
        if batch.dead_letters:
            self.dead_letters.confirm()

        def unresolved(conn: Any, result: ApplyResult) -> None:
            """Inside the batch's transaction, before its positions commit."""
            if self._unresolved(batch, 0, len(batch.changes), result):
                self.dead_letters.confirm()

        try:
            return self.sink.apply(
                batch.changes, batch.positions(), stamped=_stamped(batch), then=unresolved
            )
        except EventError:
            return self._isolating(batch)

    def _isolating(self, batch: Batch) -> ApplyResult:
        """Find the rejected changes by halving and dead-letter them.

        Sub-batches commit without positions (applying a change twice is harmless), and
        the positions commit last, after the dead letters are confirmed, through the
        same position fence as any batch."""
        result = self._halves(batch, 0, len(batch.changes))
        self.dead_letters.confirm()
        self.sink.apply([], batch.positions(), stamped=_stamped(batch))
        return result

    def _halves(self, batch: Batch, lo: int, hi: int) -> ApplyResult:
        try:
            result = self.sink.apply(
                batch.changes[lo:hi], [], stamped=_stamped(batch), fenced=batch.positions()
            )
        except EventError as exc:
            if hi - lo == 1:
                self.dead_letters.send(batch.messages[lo], exc.reason, str(exc))
                self._hold(batch, batch.changes[lo])
                return NOTHING_APPLIED
            mid = (lo + hi) // 2
            return self._halves(batch, lo, mid) + self._halves(batch, mid, hi)
        self._unresolved(batch, lo, hi, result)
        return result

    def _hold(self, batch: Batch, rejected: RowChange) -> None:
        """Leave a hold in the place of a change the target rejected (transform.py): the
        sweep of its generation keeps the row, as for an event that could not be mapped."""
        held = None if rejected.delete else hold(rejected.run_id, rejected.generation)
        if held is not None:
            with suppress(EventError):  # nothing of it can be refused but the run_id
                self.sink.apply([held], [], stamped=_stamped(batch), fenced=batch.positions())

    def _unresolved(self, batch: Batch, lo: int, hi: int, result: ApplyResult) -> int:
        """Dead-letter the partial changes of ``batch.changes[lo:hi]`` whose rows the sink
        could not complete; how many were sent."""
        missing = set(result.unresolved)
        sent = 0
        for change, msg in zip(batch.changes[lo:hi], batch.messages[lo:hi], strict=True):
            if change.run_id in missing and change.unavailable and not is_hold(change):
                columns = ", ".join(sorted(change.unavailable))
                self.dead_letters.send(
                    msg,
                    UNRESOLVED,
                    f"run_id {change.run_id!r}: an update whose unchanged TOASTed columns"
                    f" ({columns}) were not sent, for a row {self.sink.table} does not have;"
                    " set REPLICA IDENTITY FULL on the source, or repair the row"
                    " (replicator verify --repair), then dismiss or re-drive this letter",
                )
                sent += 1
        return sent


def _stamped(batch: Batch) -> tuple[str, int] | None:
    """What the sink checks the batch's generations against (none: no change stamped)."""
    return None if batch.generations is None else (batch.topic, batch.generations)
