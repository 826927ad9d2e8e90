"""A re-created topic that carries the connector's whole new snapshot: its generation is
completed by ``replicator run`` itself, with no operator step.

A broker that lost the change topic (restored empty) lost Connect's offsets with it, so
the connector snapshots again into the new topic.  The consumer records a generation for
the new topic (positioning.py, ``generations.record_recreated``): the new snapshot wins
over the older changes.  The rows deleted while the broker held their deletes are removed
by that generation's sweep, which needs the generation complete: its marks, the ends
below which every read of the snapshot lies (generations.py, 4).

``connector apply --resnapshot`` knows the marks by construction.  ``run`` knows them
when both of these hold:

1. the snapshot began in this topic: one of its partitions begins with the snapshot's
   first read (``source.snapshot == "first"``), so every read of that snapshot went to
   this topic and none to the one the broker lost;
2. Kafka Connect committed an offset past the snapshot (``snapshot_done``): Connect
   commits only a prefix of the records the broker acknowledged, so every read is in the
   log now, below the ends read after it.

The ends read then are the marks.  Where either cannot be told (no
``REPLICATOR_CONNECT_URL``, Connect out of reach) or does not hold (the new topic begins
with streamed changes: the connector kept its offsets and took no snapshot; an empty
table has no first read), nothing is completed, and ``run`` and ``connector status`` ask
for ``connector apply --resnapshot``, which is then the only complete account.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from replicator.clients.connect import ConnectClient, load_connector_file, snapshot_done
from replicator.clients.kafka import client_config
from replicator.errors import ReplicatorError
from replicator.events import KafkaPosition, Op
from replicator.settings import Settings
from replicator.stream.source.decode import Decoder, decoder_for
from replicator.stream.source.ends import PartitionEnd
from replicator.stream.source.origin import TopicView


def begins_with_snapshot(
    settings: Settings, ends: Mapping[int, PartitionEnd], decode: Decoder | None = None
) -> bool:
    """Whether a partition of the change topic begins with a snapshot's first read
    (``ends``: the topic's exact ends, for where each partition begins)."""
    decode = decode or decoder_for(settings)
    starts = {p: e.low for p, e in ends.items() if e.end > e.low}
    consumer = Consumer(client_config("reader", settings.kafka_bootstrap, settings.kafka_config))
    try:
        for partition, low in sorted(starts.items()):
            consumer.assign([TopicPartition(settings.topic, partition, low)])
            msg = _first(consumer, partition, low)
            if msg is not None and _is_first_read(decode, msg):
                return True
        return False
    finally:
        consumer.close()


def _first(consumer: Consumer, partition: int, low: int, timeout: float = 10.0) -> Any:
    """The message at ``low`` of the one partition assigned; None when none arrives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or msg.partition() != partition:
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return None
            continue
        return msg if msg.offset() == low else None
    return None


def _is_first_read(decode: Decoder, msg: Any) -> bool:
    try:
        event = decode(
            msg.key(), msg.value(), KafkaPosition(msg.topic(), msg.partition(), msg.offset())
        )
    except ReplicatorError:
        return False
    return event is not None and event.op is Op.READ and event.snapshot == "first"


def connect_snapshot_done(settings: Settings) -> bool | None:
    """Whether Kafka Connect committed an offset past the connector's snapshot; None when
    it cannot be told (no Connect URL, Connect out of reach)."""
    if not settings.connect_url:
        return None
    try:
        name = load_connector_file(settings.connector_file)["name"]
        return snapshot_done(ConnectClient(settings.connect_url).offsets(name))
    except ReplicatorError:
        return None


def whole_snapshot(settings: Settings) -> Callable[[Callable[[], TopicView]], bool | None]:
    """The check positioning.py runs on a re-created topic (``describe``: the topic as the
    broker shows it now): both conditions of the module docstring (True), not yet or not
    at all (False), or None when it cannot be told."""

    def check(describe: Callable[[], TopicView]) -> bool | None:
        done = connect_snapshot_done(settings)
        if not done:
            return done
        return begins_with_snapshot(settings, describe().ends)

    return check
