"""Where each partition of the change topic ends, and whether someone has read that far.

"Caught up" is decided against exact end offsets, found by reading, never trusted from
``get_watermark_offsets()`` alone:

* Kafka's ListOffsets high watermark is the offset the NEXT message will get.  The local
  broker (tansu) answers with something smaller (seen: the base offset of the last record
  batch plus one; the doc's "last offset" when batches hold one message), while its fetch
  responses carry the right value.
* So :func:`probe_ends` assigns every partition at ``max(low, high - 1)`` -- never past the
  real end on either broker -- and reads until the first fetch answer for each: the end
  is the high watermark that answer carried (``get_watermark_offsets(cached=True)``,
  right on both brokers), or the offset of the end-of-partition event when there was
  nothing to read.  On a busy partition end-of-partition may never come (every fetch
  brings new messages), so it cannot be waited for.
* A partition with no traffic ends where it starts (``end == low``): there is nothing to
  wait for, whether or not a position was ever stored for it.

A reader has caught up with a probe when, for every partition, its next offset is at
least the probed end (:func:`caught_up`).  The probe is taken after the moment that must
be covered, so everything published before that moment lies below the ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from replicator.clients.kafka import client_config
from replicator.errors import BrokerUnavailable, TransientError
from replicator.stream.apply.checkpoint import read_positions


@dataclass(frozen=True, slots=True)
class PartitionEnd:
    """``low``: the first offset still in the log; ``end``: the offset of the next message."""

    partition: int
    low: int
    end: int

    @property
    def events(self) -> int:
        """Offsets between low and end (compaction can leave gaps: an upper bound)."""
        return max(0, self.end - self.low)


class NotCaughtUp(TransientError):
    """The reader did not reach the probed ends in time; ``lagging`` says where it is."""

    def __init__(self, message: str, lagging: dict[int, tuple[int | None, int]]) -> None:
        super().__init__(message)
        self.lagging = lagging


def lagging(
    positions: Mapping[int, int | None], ends: Mapping[int, PartitionEnd]
) -> dict[int, tuple[int | None, int]]:
    """Pure. Partitions whose next offset is below the end: ``{p: (next or None, end)}``.

    A partition without a position has read nothing, which is enough only when there is
    nothing to read (``end <= low``)."""
    out: dict[int, tuple[int | None, int]] = {}
    for p, end in sorted(ends.items()):
        position = positions.get(p)
        if end.end <= end.low:
            continue
        if position is None or position < end.end:
            out[p] = (position, end.end)
    return out


def caught_up(positions: Mapping[int, int | None], ends: Mapping[int, PartitionEnd]) -> bool:
    """Pure. Every partition's next offset has reached its probed end."""
    return not lagging(positions, ends)


def describe_lag(lag: Mapping[int, tuple[int | None, int]]) -> str:
    """Pure. ``partition 0 at 12 of 40, partition 3 at none of 7``."""
    return ", ".join(
        f"partition {p} at {'none' if pos is None else pos} of {end}"
        for p, (pos, end) in sorted(lag.items())
    )


def probe_ends(
    bootstrap: str, topic: str, extra: Mapping[str, Any] | None = None, timeout: float = 30.0
) -> dict[int, PartitionEnd]:
    """The exact end of every partition of ``topic`` now ({} when the topic does not exist)."""
    consumer = Consumer(
        client_config(
            "reader",
            bootstrap,
            extra or {},
            **{
                "enable.partition.eof": True,
                "auto.offset.reset": "latest",  # a start past the end jumps to the end
                "fetch.wait.max.ms": 50,
            },
        )
    )
    try:
        return _probe(consumer, topic, timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot read the ends of {topic}: {exc}") from exc
    finally:
        consumer.close()


def _probe(consumer: Consumer, topic: str, timeout: float) -> dict[int, PartitionEnd]:
    deadline = time.monotonic() + timeout
    metadata = consumer.list_topics(topic, timeout=timeout)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        if (
            info is not None
            and info.error is not None
            and info.error.code()
            not in (
                KafkaError.UNKNOWN_TOPIC_OR_PART,
                KafkaError._UNKNOWN_TOPIC,
            )
        ):
            raise BrokerUnavailable(f"cannot describe {topic}: {info.error.str()}")
        return {}
    lows: dict[int, int] = {}
    starts = []
    for p in sorted(info.partitions):
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=max(1.0, deadline - time.monotonic()), cached=False
        )
        lows[p] = low
        starts.append(TopicPartition(topic, p, max(low, high - 1)))
    consumer.assign(starts)
    ends: dict[int, int] = {}
    while len(ends) < len(lows):
        if time.monotonic() > deadline:
            missing = sorted(set(lows) - set(ends))
            raise BrokerUnavailable(f"no fetch answer from {topic} {missing} in {timeout}s")
        for msg in consumer.consume(1000, timeout=0.2):
            p, err, offset = msg.partition(), msg.error(), msg.offset()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise BrokerUnavailable(f"reading {topic}: {err.str()}")
                continue
            if p is None or offset is None:  # not a partition's message: nothing to learn
                continue
            if err is None:
                if p not in ends:  # the fetch answer that carried it also carried the end
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                    ends[p] = max(high, offset + 1)
            else:  # the end of the partition
                ends.setdefault(p, offset)
    return {p: PartitionEnd(p, min(lows[p], ends[p]), ends[p]) for p in lows}


def wait_for_positions(
    conninfo: str,
    offsets_table: str,
    target_table: str,
    topic: str,
    ends: Mapping[int, PartitionEnd],
    timeout: float,
    interval: float = 0.5,
    progress: Callable[[str], None] | None = None,
    every: float = 5.0,
) -> None:
    """Wait until the positions stored for ``target_table`` reach ``ends``; raise
    :class:`NotCaughtUp` after ``timeout`` seconds.  ``progress`` hears where the
    replicator is every ``every`` seconds of waiting (a person waits less blindly)."""
    started = time.monotonic()
    deadline, told = started + timeout, started
    while True:
        stored = read_positions(conninfo, offsets_table, target_table, topic)
        lag = lagging(stored, ends)
        if not lag:
            return
        now = time.monotonic()
        if progress is not None and now - told >= every:
            told = now
            progress(
                f"waiting for the replicator of {target_table!r} to reach the ends of {topic}:"
                f" {describe_lag(lag)} ({now - started:.0f} of {timeout:g} s)"
            )
        if now >= deadline:
            raise NotCaughtUp(
                f"the replicator of {target_table!r} did not catch up with {topic} within"
                f" {timeout:g}s ({describe_lag(lag)}); is `replicator run` running for it?",
                lag,
            )
        time.sleep(interval)
