"""Where each partition of the running consumer starts, and noticing that the topic under
it was re-created: the stored positions, checked by :mod:`replicator.stream.source.origin`
against the topic as the broker shows it now."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Protocol

from replicator.errors import CutOver, PositionOutOfRange
from replicator.events import PartitionPosition
from replicator.observe.metrics import Metrics
from replicator.settings import Settings
from replicator.stream.apply.checkpoint import CLOSED
from replicator.stream.apply.generations import Generation, Generations
from replicator.stream.source import origin


class Described(Protocol):
    def describe(self) -> origin.TopicView: ...
    def topic_id(self) -> str | None: ...


class Stored(Protocol):
    def load_positions(self, topic: str) -> dict[int, PartitionPosition]: ...
    def stream_closed(self, topic: str) -> bool: ...
    def load_generations(self, topic: str) -> list[Generation]: ...
    def record_recreated(self, topic: str, topic_id: str, partitions: list[int]) -> int | None: ...
    def sweep(self, topic: str) -> tuple[int, int] | None: ...


log = logging.getLogger("replicator.consumer")


class Positioning:
    """The starts of one consumer's partitions, the id of the topic they are in, and the
    snapshot generations its events are stamped with (loaded with the starts)."""

    def __init__(self, settings: Settings, stored: Stored, metrics: Metrics) -> None:
        self.topic = settings.topic
        self._stored = stored
        self._metrics = metrics
        self._accept_gap = settings.accept_gap
        self.topic_id: str | None = None  # of the topic the partitions were positioned in
        self.generations = Generations()
        self.watch_every_s = 10.0
        self._checked = time.monotonic()

    def starts(self, source: Described | None, partitions: Iterable[int]) -> dict[int, int | None]:
        """Their stored positions, checked against the topic now: a re-created topic is
        read from its start, a gap raises ``PositionGap``, closed ones ``CutOver``.
        Raises ``TransientError`` while the target or the broker is away."""
        assert source is not None
        stored = self._stored.load_positions(self.topic)
        if any(p.next_offset == CLOSED for p in stored.values()):
            raise CutOver(f"the stream of {self.topic} was closed by a cutover")
        view = source.describe()
        self.topic_id = view.topic_id
        self.generations = Generations(self._stored.load_generations(self.topic), view.topic_id)
        found = origin.starts(partitions, stored, view, accept_gap=self._accept_gap)
        for p, (kind, why) in found.reset.items():
            self._metrics.positions_reset.labels(kind).inc()
            log.warning("stored position set aside", extra={"partition": p, "reason": why})
        recreated = any(kind == "topic_recreated" for kind, _ in found.reset.values())
        if recreated and view.topic_id is not None:
            self._recreated(view)
        return found.offsets

    def _recreated(self, view: origin.TopicView) -> None:
        """The topic was re-created under the stored positions: what the table had not
        applied of the old one is gone from the stream.  Record a generation for the new
        topic (its snapshot then wins over the older changes), and say what is left to
        the operator.  Not sure whether anything was lost, so said whenever it happens."""
        assert view.topic_id is not None
        number = self._stored.record_recreated(self.topic, view.topic_id, sorted(view.ends))
        if number is None:  # recorded by another member or a --resnapshot: said there
            return
        self.generations = Generations(self._stored.load_generations(self.topic), view.topic_id)
        log.error(
            "the topic was re-created under the stored positions (a broker that lost it):"
            " the changes of the old topic this table had not applied are gone from the"
            " stream. Recorded snapshot generation %d for the new topic, so the connector's"
            " new snapshot wins over older changes; rows deleted meanwhile stay until"
            " `replicator connector apply --resnapshot` runs (connector status asks for it)",
            number,
            extra={"topic": self.topic, "generation": number},
        )

    def watch(self, source: Described) -> None:
        """Raise ``PositionOutOfRange`` when the topic was re-created under the running
        consumer (checked at most every ``watch_every_s``): every partition re-positions.
        Raise ``CutOver`` when a cutover closed the stream (nothing may arrive to tell)."""
        now = time.monotonic()
        if now - self._checked < self.watch_every_s or self.topic_id is None:
            return
        self._checked = now
        if self._stored.stream_closed(self.topic):
            raise CutOver(f"the stream of {self.topic} was closed by a cutover")
        self.sweep()
        current = source.topic_id()
        if current is not None and current != self.topic_id:
            raise PositionOutOfRange(f"topic id changed from {self.topic_id} to {current}")

    def sweep(self) -> None:
        """Once the table has read a completed re-snapshot whole, remove the rows it did
        not have (:func:`~replicator.stream.apply.generations.sweep`)."""
        done = self._stored.sweep(self.topic)
        if done is not None:
            generation, rows = done
            self._metrics.rows.labels("swept").inc(rows)
            log.warning(
                "snapshot generation complete: rows deleted while nothing streamed removed",
                extra={"generation": generation, "rows": rows},
            )
