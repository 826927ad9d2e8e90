"""Apache Kafka's produce-side rules, checked over what the local broker stored.

The local broker (tansu) accepts records that Apache Kafka refuses at produce time, so a
pipeline that works on the local stack could stop on the platform it is deployed to.
Two rules matter for a Debezium source and the dead-letter producer:

* a record without a key is refused on a topic whose ``cleanup.policy`` includes
  ``compact`` (``InvalidRecordException``: "Compacted topic cannot accept message
  without key"); a Debezium TRUNCATE event has no key;
* a record batch larger than the topic's ``max.message.bytes`` (the broker's
  ``message.max.bytes``, 1,048,588 bytes by default, when the topic sets none) is
  refused (``RecordTooLargeException``).

:func:`violations` is pure: records and a topic's configuration in, the records Apache
Kafka would have refused out.  :func:`check_topics` reads every record of the topics
of a broker and their configurations (``DescribeConfigs``, which the local broker
answers with what the topic was created with) and applies it.  The integration tests
run it over every topic of every local stack they start, so the suite fails where
Apache Kafka would, not only where the local broker does.

The size of a record batch is not visible to a consumer; it is bounded here by the
record's key, value and headers plus the batch and record framing
(:data:`BATCH_OVERHEAD`).  A producer batches small records together up to its
``batch.size`` (16 KiB for Kafka Connect's), far below any limit here; a record larger
than that is a batch of its own, which is what the estimate describes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from replicator.clients.kafka import client_config
from replicator.errors import BrokerUnavailable
from replicator.stream.source.ends import probe_ends

#: Apache Kafka's broker default ``message.max.bytes``: the limit of a topic that sets no
#: ``max.message.bytes``.
BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
#: A record batch's header (61 bytes) and one record's framing (at most 21 bytes of
#: varints and attributes) around its key, value and headers.
BATCH_OVERHEAD = 61 + 21


@dataclass(frozen=True, slots=True)
class Record:
    """What the rules look at in one stored record."""

    partition: int
    offset: int
    key: bytes | None
    size: int  # key, value and headers, in bytes


@dataclass(frozen=True, slots=True)
class Violation:
    topic: str
    partition: int
    offset: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}: {self.rule}: {self.detail}"


def max_message_bytes(config: Mapping[str, str | None]) -> int:
    """Pure. The largest record batch the topic accepts."""
    value = config.get("max.message.bytes")
    return int(value) if value else BROKER_DEFAULT_MAX_MESSAGE_BYTES


def compacted(config: Mapping[str, str | None]) -> bool:
    """Pure. Whether the topic's ``cleanup.policy`` includes ``compact``."""
    policy = config.get("cleanup.policy") or "delete"
    return "compact" in {p.strip() for p in policy.split(",")}


def violations(
    topic: str, config: Mapping[str, str | None], records: Iterable[Record]
) -> list[Violation]:
    """Pure. The records of ``topic`` that Apache Kafka would have refused at produce
    time, given the topic's ``config``."""
    limit = max_message_bytes(config)
    keyed = compacted(config)
    out = []
    for r in records:
        if keyed and r.key is None:
            out.append(
                Violation(
                    topic,
                    r.partition,
                    r.offset,
                    "keyless record on a compacted topic",
                    "Compacted topic cannot accept message without key"
                    f" (cleanup.policy={config.get('cleanup.policy')})",
                )
            )
        if r.size + BATCH_OVERHEAD > limit:
            out.append(
                Violation(
                    topic,
                    r.partition,
                    r.offset,
                    "record too large",
                    f"{r.size + BATCH_OVERHEAD} bytes as a batch > max.message.bytes {limit}",
                )
            )
    return out


def topic_configs(
    bootstrap: str, extra: Mapping[str, Any] | None = None
) -> dict[str, dict[str, str | None]]:
    """Every topic of the broker with its configuration."""
    admin = AdminClient(client_config("admin", bootstrap, extra or {}))
    topics = list(admin.list_topics(timeout=15).topics)
    out: dict[str, dict[str, str | None]] = {}
    if not topics:
        return out
    futures = admin.describe_configs([ConfigResource("topic", t) for t in topics])
    for resource, future in futures.items():
        try:
            entries = future.result(timeout=15)
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot describe {resource.name}: {exc}") from exc
        out[resource.name] = {k: e.value for k, e in entries.items()}
    return out


def stored_records(
    bootstrap: str, topic: str, extra: Mapping[str, Any] | None = None, timeout: float = 120.0
) -> Iterator[Record]:
    """Every record of ``topic`` stored now, from the start of each partition."""
    ends = {p: e for p, e in probe_ends(bootstrap, topic, extra).items() if e.end > e.low}
    if not ends:
        return
    consumer = Consumer(client_config("reader", bootstrap, extra or {}))
    try:
        consumer.assign([TopicPartition(topic, p, e.low) for p, e in ends.items()])
        left = {p: e.end for p, e in ends.items()}
        deadline = time.monotonic() + timeout
        while left:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"{topic}: not read to its end in {timeout:.0f} s: {left}")
            for msg in consumer.consume(1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise BrokerUnavailable(f"reading {topic}: {err.str()}")
                    continue
                p, offset = msg.partition(), msg.offset()
                if p is None or offset is None or p not in left or offset >= left[p]:
                    continue
                key, value = msg.key(), msg.value()
                size = len(key or b"") + len(value or b"")
                for header in msg.headers() or []:
                    size += len(header[0]) + len(header[1] or b"")
                yield Record(p, offset, key if isinstance(key, bytes) else None, size)
                if offset + 1 >= left[p]:
                    del left[p]
    finally:
        consumer.close()


def check_topics(bootstrap: str, extra: Mapping[str, Any] | None = None) -> list[Violation]:
    """Every record stored on the broker that Apache Kafka would have refused."""
    out: list[Violation] = []
    for topic, config in sorted(topic_configs(bootstrap, extra).items()):
        out.extend(violations(topic, config, stored_records(bootstrap, topic, extra)))
    return out
