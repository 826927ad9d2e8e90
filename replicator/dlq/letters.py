"""The dead-letter topic as records: :class:`DeadLetter`, read from the topic's start up to
where it ends now.  Reading never commits and joins no group."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from replicator.clients.kafka import client_config
from replicator.errors import BrokerUnavailable
from replicator.settings import Settings
from replicator.stream.source.ends import PartitionEnd, probe_ends


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter: where it is in the dead-letter topic, why it is there
    (``dlq.reason``, ``dlq.error``) and where it came from (``dlq.topic``,
    ``dlq.partition``, ``dlq.offset``); ``key``/``value`` as dead-lettered."""

    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace") if value is not None else None
        return None

    @property
    def reason(self) -> str:
        return self.header("dlq.reason") or "unknown"

    @property
    def error(self) -> str:
        return self.header("dlq.error") or ""

    @property
    def origin(self) -> tuple[str | None, int | None, int | None]:
        """(topic, partition, offset) of the original event."""
        partition, offset = self.header("dlq.partition"), self.header("dlq.offset")
        return (
            self.header("dlq.topic"),
            int(partition) if partition and partition.isdigit() else None,
            int(offset) if offset and offset.lstrip("-").isdigit() else None,
        )

    @property
    def key_text(self) -> str:
        """The key for people: the event's id when the key is Debezium's ``{"id": ...}``."""
        if self.key is None:
            return "(none)"
        text = self.key.decode("utf-8", "replace")
        return text if len(text) <= 120 else text[:117] + "..."

    @property
    def original_size(self) -> int:
        """The value's size when it was dead-lettered (cut values say it in a header)."""
        size = self.header("dlq.value_bytes") or self.header("dlq.value_omitted")
        return int(size) if size and size.isdigit() else len(self.value or b"")


def read_dead_letters(settings: Settings, timeout: float = 60.0) -> list[DeadLetter]:
    """Every dead letter of ``settings.dead_letter_topic``, in partition and offset order
    ([] when the topic does not exist)."""
    topic = settings.dead_letter_topic
    ends = probe_ends(settings.kafka_bootstrap, topic, settings.kafka_config)
    return sorted(_read(settings, topic, ends, timeout), key=lambda d: (d.partition, d.offset))


def _read(
    settings: Settings, topic: str, ends: dict[int, PartitionEnd], timeout: float
) -> Iterator[DeadLetter]:
    todo = {p: e for p, e in ends.items() if e.end > e.low}
    if not todo:
        return
    consumer = Consumer(client_config("reader", settings.kafka_bootstrap, settings.kafka_config))
    try:
        consumer.assign([TopicPartition(topic, p, e.low) for p, e in todo.items()])
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"reading {topic}: partitions {sorted(todo)} unfinished")
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is not None:
                    continue
                p, offset = msg.partition(), msg.offset()
                yield _letter(msg)
                if p in todo and offset is not None and offset + 1 >= todo[p].end:
                    del todo[p]
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot read {topic}: {exc}") from exc
    finally:
        consumer.close()


def _letter(msg: Any) -> DeadLetter:
    kind, stamp = msg.timestamp()
    return DeadLetter(
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp_ms=stamp if kind else None,
        key=msg.key(),
        value=msg.value(),
        headers=tuple(msg.headers() or ()),
    )
