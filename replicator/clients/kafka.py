"""The one builder of Kafka client configs: every consumer, producer and admin client
of the product gets its librdkafka settings here, so the guarantees they rest on (no
automatic commits or offset stores) are set in one place and nothing overrides them."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Literal

from confluent_kafka import KafkaError

from replicator.observe.logs import kafka_logger

Kind = Literal["group", "reader", "producer", "admin"]

#: The largest change event that flows: the connector's producer refuses a larger one
#: (``producer.override.max.request.size``) and the change topic is created to accept it
#: (``topic.creation.default.max.message.bytes``), both in
#: ``connectors/workflow-processes.json``; Apache Kafka's defaults (about 1 MB) would stop
#: the connector at the first row of more than 1 MB.  A larger row is skipped by Connect
#: (``errors.tolerance=all``), counted there, and written from the source by
#: ``verify --repair`` (docs/explanation/apache-kafka.md).
EVENT_MAX_BYTES = 16 * 1024 * 1024
#: The largest dead letter: a whole event plus the dead-letter headers.  The dead-letter
#: topic is created to accept it and the producer to send it.
LETTER_MAX_BYTES = EVENT_MAX_BYTES + 1024 * 1024

#: Tuning per kind of client, which ``REPLICATOR_KAFKA_CONFIG`` may override.
_TUNING: dict[Kind, dict[str, Any]] = {
    "group": {
        "fetch.max.bytes": 64 * 1024 * 1024,
        # one partition's fetch holds the largest record of the change or dead-letter
        # topic whole (Kafka would return a larger first batch anyway; this does not
        # rely on it)
        "max.partition.fetch.bytes": LETTER_MAX_BYTES,
        # Kafka answers a fetch as soon as data arrives; this bounds how long an idle
        # fetch waits, which is the whole wait on brokers that answer only then (the local
        # stack's).  Not lower: such a broker also stops filling a fetch at this bound,
        # and with 1 M events stored 20 ms returned about 15 events per fetch (run read
        # 90 events/s where 100 ms reads 20 k; docs/evidence/performance.md)
        "fetch.wait.max.ms": 100,
        "topic.metadata.refresh.interval.ms": 5000,
        "queued.max.messages.kbytes": 64 * 1024,
    },
    "reader": {
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": LETTER_MAX_BYTES,
        "queued.max.messages.kbytes": 128 * 1024,
        "auto.offset.reset": "earliest",
    },
    "producer": {
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 30_000,
        "message.max.bytes": LETTER_MAX_BYTES,
    },
    "admin": {},
}


def _log_kafka_error(err: KafkaError) -> None:
    kafka_logger().warning("kafka: %s", err.str(), extra={"code": err.name()})


#: Settings of a group member only: a reader never joins a group, and librdkafka refuses
#: some of them without the others (``max.poll.interval.ms`` below ``session.timeout.ms``).
GROUP_ONLY = (
    "max.poll.interval.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol",
    "group.instance.id",
)


def client_config(
    kind: Kind, bootstrap: str, extra: Mapping[str, Any], **fixed: Any
) -> dict[str, Any]:
    """The librdkafka config of one client: tuning, then ``extra`` (the user's
    ``REPLICATOR_KAFKA_CONFIG``: SASL, SSL, tuning; its group settings only for a group
    member), then what the guarantees rest on, which nothing overrides: no automatic
    commits or offset stores, and for a ``reader`` a throw-away group id that never
    joins a group or commits."""
    if kind != "group":
        extra = {k: v for k, v in extra.items() if k not in GROUP_ONLY}
    guarantees: dict[str, Any] = {}
    if kind in ("group", "reader"):
        guarantees = {"enable.auto.commit": False, "enable.auto.offset.store": False}
    if kind == "reader":
        guarantees["group.id"] = f"replicator-reader-{uuid.uuid4().hex[:12]}"
    return {
        **_TUNING[kind],
        "bootstrap.servers": bootstrap,
        "error_cb": _log_kafka_error,
        "logger": kafka_logger(),
        **extra,
        **guarantees,
        **fixed,
    }
