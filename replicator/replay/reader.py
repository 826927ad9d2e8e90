"""The source of a replay: ``replicator run``'s pipeline reads the topic through it.

* no consumer group: every partition is assigned at once, through the replicator's own
  assignment callback (which positions it at the stored position or the beginning);
  nothing joins a group and nothing is committed, so the live group is untouched;
* it says when it is done: ``on_caught_up`` is called once every partition has been read
  up to the ends probed before the replay started (:mod:`replicator.stream.source.ends`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from replicator.clients.kafka import client_config
from replicator.observe.progress import Progress
from replicator.settings import Settings
from replicator.stream.source.consumer import KafkaSource, OnAssign, OnLoss
from replicator.stream.source.ends import PartitionEnd, caught_up


class ReplaySource(KafkaSource):
    """Reads every partition of ``topic`` up to ``ends``, assign-only."""

    def __init__(
        self,
        consumer: Any,
        topic: str,
        ends: Mapping[int, PartitionEnd],
        on_caught_up: Callable[[], None],
        progress: Progress,
        bootstrap: str = "",
        extra: Mapping[str, Any] = {},
    ) -> None:
        super().__init__(consumer, topic, bootstrap, extra)
        self._ends = ends
        self._on_caught_up = on_caught_up
        self._progress = progress
        self.read: dict[int, int | None] = {}  # next offset per partition, None: unknown
        self.events = 0

    @classmethod
    def reading(
        cls,
        settings: Settings,
        ends: Mapping[int, PartitionEnd],
        on_caught_up: Callable[[], None],
        progress: Progress,
    ) -> ReplaySource:
        config = client_config("reader", settings.kafka_bootstrap, settings.kafka_config)
        return cls(
            Consumer(config),
            settings.topic,
            ends,
            on_caught_up,
            progress,
            settings.kafka_bootstrap,
            settings.kafka_config,
        )

    def subscribe(self, on_assign: OnAssign, on_revoke: OnLoss, on_lost: OnLoss) -> None:
        partitions = [TopicPartition(self.topic, p) for p in sorted(self._ends)]
        self._assign(partitions, on_assign)
        self.read = {tp.partition: tp.offset if tp.offset >= 0 else None for tp in partitions}
        self._check()

    def seek(self, partition: int, offset: int | None) -> None:
        self.read[partition] = offset
        super().seek(partition, offset)

    def poll(self, timeout: float) -> list[Any]:
        messages = super().poll(timeout)
        for msg in messages:
            p = msg.partition()
            self.read[p] = max(self.read.get(p) or 0, msg.offset() + 1)
        if messages:
            self.events += len(messages)
            self._progress.advance(len(messages))
        self._check()
        return messages

    def commit(self, next_offsets: Mapping[int, int]) -> None:
        """Nothing: a replay leaves no trace in any consumer group."""

    def _check(self) -> None:
        if caught_up(self.read, self._ends):
            self._on_caught_up()
