"""The source stage: the Kafka consumer (its config comes from clients/kafka.py).

:class:`KafkaSource` returns messages and takes callbacks for the partitions it is given
or loses; it never calls into the loop otherwise, so the loop composes it without a
cycle.  A source positions a partition where the assignment callback says (the positions
stored in the target), never where Kafka's committed offsets are: those are written for
monitoring only (:meth:`KafkaSource.commit`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from replicator.clients.kafka import client_config
from replicator.errors import BrokerUnavailable, PositionOutOfRange
from replicator.observe.metrics import GroupState
from replicator.settings import Settings
from replicator.stream.source.origin import TopicView

log = logging.getLogger("replicator.consumer")

#: ``on_assign(partitions)`` answers where each partition starts (None: the beginning),
#: or None when it cannot tell yet: then the partitions are assigned paused.
OnAssign = Callable[[list[int]], Mapping[int, int | None] | None]
OnLoss = Callable[[list[int]], None]

#: How often librdkafka reports its statistics (read for the group's join state only).
STATS_INTERVAL_MS = 5000


#: The most messages one :meth:`KafkaSource.poll` returns; as many means more are waiting.
POLL_MAX = 1000


class GroupWatch:
    """The group's join state from librdkafka's statistics (``stats_cb``, called inside
    ``poll`` on the loop's thread, so no lock): what tells a member that a stable group
    gave it nothing from one whose rebalance never completes."""

    def __init__(self) -> None:
        self._settled_at = time.monotonic()
        self.state: GroupState | None = None

    def stats(self, doc: str) -> None:
        try:
            cgrp = json.loads(doc).get("cgrp")
        except (ValueError, AttributeError):  # never from librdkafka; a broken one is skipped
            return
        if not isinstance(cgrp, dict):
            return
        join_state, now = str(cgrp.get("join_state", "")), time.monotonic()
        if join_state == "steady":
            self._settled_at = now
        self.state = GroupState(join_state, now - self._settled_at)


class KafkaSource:
    """One topic's partitions, read through a confluent-kafka consumer.

    The consumer never resets a position by itself (``auto.offset.reset=error``): a
    position the log does not hold raises :class:`PositionOutOfRange`, and the loop
    decides from :meth:`describe` (stream/origin.py)."""

    def __init__(
        self,
        consumer: Any,
        topic: str,
        bootstrap: str = "",
        extra: Mapping[str, Any] = {},
        group: GroupWatch | None = None,
    ) -> None:
        self._consumer = consumer
        self.topic = topic
        self._bootstrap = bootstrap
        self._extra = dict(extra)
        self._admin: AdminClient | None = None
        self._group = group

    @classmethod
    def group_member(cls, settings: Settings) -> KafkaSource:
        """``replicator run``'s source: a member of ``settings.group_id``."""
        session_ms = settings.session_timeout_ms
        watch = GroupWatch()
        config = client_config(
            "group",
            settings.kafka_bootstrap,
            settings.kafka_config,
            **{
                "group.id": settings.group_id,
                "auto.offset.reset": "error",
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": max(500, session_ms // 5),
                "statistics.interval.ms": STATS_INTERVAL_MS,
                "stats_cb": watch.stats,
            },
        )
        return cls(
            Consumer(config),
            settings.topic,
            settings.kafka_bootstrap,
            settings.kafka_config,
            group=watch,
        )

    def group_state(self) -> GroupState | None:
        """The group as this member's client last reported it; None before the first
        report (or for a consumer built without a :class:`GroupWatch`)."""
        return None if self._group is None else self._group.state

    def subscribe(self, on_assign: OnAssign, on_revoke: OnLoss, on_lost: OnLoss) -> None:
        """Join the group; the callbacks run inside :meth:`poll`."""

        def assigned(consumer: Any, partitions: list[TopicPartition]) -> None:
            self._assign(partitions, on_assign)

        def revoked(consumer: Any, partitions: list[TopicPartition]) -> None:
            on_revoke([tp.partition for tp in partitions])
            consumer.unassign()

        def lost(consumer: Any, partitions: list[TopicPartition]) -> None:
            on_lost([tp.partition for tp in partitions])
            consumer.unassign()

        self._consumer.subscribe([self.topic], on_assign=assigned, on_revoke=revoked, on_lost=lost)

    def _assign(self, partitions: list[TopicPartition], on_assign: OnAssign) -> None:
        starts = on_assign([tp.partition for tp in partitions])
        for tp in partitions:
            # paused until re-positioned: never left to Kafka's committed offsets (with
            # auto.offset.reset=error a partition without any would fail, not wait)
            start = (starts or {}).get(tp.partition)
            tp.offset = OFFSET_BEGINNING if start is None else start
        self._consumer.assign(partitions)
        # librdkafka keeps a partition's pause across unassign and assign: one paused when
        # it was lost or revoked (an abandoned batch, a held lane) would come back paused
        # and never fetch again, with the member looking healthy.  So every assignment
        # sets the pause itself: paused until re-positioned, else fetching.
        if starts is None:
            self._consumer.pause(partitions)
        else:
            self._consumer.resume(partitions)

    def poll(self, timeout: float) -> list[Any]:
        """The messages fetched so far (at most :data:`POLL_MAX`), waiting up to
        ``timeout`` for the first one.

        End-of-partition events and passing errors (the topic not created yet: Debezium
        creates it with its first event) are logged and skipped; a fatal error raises
        :class:`BrokerUnavailable`."""
        # poll returns with the first message; consume(timeout=0) then takes what is
        # already fetched (consume with a timeout would wait for a full 1000)
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        out = []
        for msg in [first, *self._consumer.consume(POLL_MAX - 1, timeout=0)]:
            err = msg.error()
            if err is None:
                out.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.code() == KafkaError._AUTO_OFFSET_RESET:
                raise PositionOutOfRange(f"partition {msg.partition()}: {err.str()}")
            elif err.fatal():
                raise BrokerUnavailable(f"consumer error: {err.str()}")
            else:
                log.warning("consumer: %s", err.str(), extra={"code": err.name()})
        return out

    def describe(self, timeout: float = 15.0) -> TopicView:
        """The topic's id and the exact ends of its partitions, now."""
        from replicator.stream.source.ends import probe_ends

        return TopicView(
            self.topic_id(timeout), probe_ends(self._bootstrap, self.topic, self._extra, timeout)
        )

    def topic_id(self, timeout: float = 15.0) -> str | None:
        """The topic's Kafka id (a re-created topic gets a new one); None when the broker
        does not tell (or the topic does not exist yet)."""
        if self._admin is None:  # one client for the source's life: asked every 10 s
            self._admin = AdminClient(client_config("admin", self._bootstrap, self._extra))
        future = self._admin.describe_topics(TopicCollection([self.topic]), request_timeout=timeout)
        try:
            uuid_ = str(future[self.topic].result(timeout).topic_id or "")
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            raise BrokerUnavailable(f"cannot describe {self.topic}: {exc}") from exc
        return None if not uuid_ or set(uuid_) <= {"A", "="} else uuid_

    def seek(self, partition: int, offset: int | None) -> None:
        """Read ``partition`` from ``offset`` next (None: from its beginning)."""
        start = OFFSET_BEGINNING if offset is None else offset
        try:
            self._consumer.seek(TopicPartition(self.topic, partition, start))
        except KafkaException as exc:
            raise BrokerUnavailable(f"seek of partition {partition} failed: {exc}") from exc

    def pause(self, partitions: Iterable[int]) -> None:
        self._consumer.pause(self._partitions(partitions))

    def resume(self, partitions: Iterable[int]) -> None:
        self._consumer.resume(self._partitions(partitions))

    def commit(self, next_offsets: Mapping[int, int]) -> None:
        """Kafka's committed offsets, for monitoring only: never read back."""
        offsets = [TopicPartition(self.topic, p, off) for p, off in next_offsets.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.debug("kafka commit failed", extra={"error": str(exc)})

    def lag(self, applied: Mapping[int, int | None]) -> dict[int, int]:
        """Messages not applied yet, per partition: the high watermark minus ``applied``
        (the next offset whose event is not in the target; None: nothing applied yet).
        What was read but not applied (a batch in flight, or abandoned) counts."""
        out = {}
        for p, next_offset in sorted(applied.items()):
            tp = TopicPartition(self.topic, p)
            try:
                low, high = self._consumer.get_watermark_offsets(tp, timeout=1, cached=False)
            except KafkaException:
                continue
            out[p] = max(0, high - (low if next_offset is None else next_offset))
        return out

    def close(self) -> None:
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.debug("consumer close: %s", exc)

    def _partitions(self, numbers: Iterable[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(numbers)]
