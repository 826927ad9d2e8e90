"""Where each partition of the running consumer starts, and noticing that the topic under
it was re-created: the stored positions, checked by :mod:`replicator.stream.source.origin`
against the topic as the broker shows it now."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from replicator.errors import CutOver, PositionOutOfRange
from replicator.events import PartitionPosition
from replicator.observe.metrics import Metrics
from replicator.settings import Settings
from replicator.stream.apply.checkpoint import CLOSED
from replicator.stream.apply.generations import Generation, Generations, unfinished
from replicator.stream.source import origin
from replicator.stream.source.recreated import whole_snapshot


class Described(Protocol):
    def describe(self) -> origin.TopicView: ...
    def topic_id(self) -> str | None: ...


class Stored(Protocol):
    def load_positions(self, topic: str) -> dict[int, PartitionPosition]: ...
    def stream_closed(self, topic: str) -> bool: ...
    def load_generations(self, topic: str) -> list[Generation]: ...
    def record_recreated(self, topic: str, topic_id: str, partitions: list[int]) -> int | None: ...
    def complete_generation(self, topic: str, number: int, marks: dict[int, int]) -> None: ...
    def sweep(self, topic: str) -> tuple[int, int] | None: ...


#: Whether the re-created topic holds a snapshot that began in it and that Connect has
#: wholly committed (recreated.py): True, False, or None when it cannot be told.
WholeSnapshot = Callable[[Callable[[], origin.TopicView]], bool | None]


log = logging.getLogger("replicator.consumer")


class Positioning:
    """The starts of one consumer's partitions, the id of the topic they are in, and the
    snapshot generations its events are stamped with (loaded with the starts)."""

    def __init__(self, settings: Settings, stored: Stored, metrics: Metrics) -> None:
        self.topic = settings.topic
        self._whole_snapshot: WholeSnapshot = whole_snapshot(settings)
        self._told: set[tuple[int, bool | None]] = set()
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
            " new snapshot wins over older changes; once that snapshot is wholly in the new"
            " topic (told from Kafka Connect's committed offsets), the rows deleted meanwhile"
            " are removed; where that cannot be told, `replicator connector apply"
            " --resnapshot` removes them (connector status asks for it)",
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
        self.complete_recreated(source)
        self.sweep()
        current = source.topic_id()
        if current is not None and current != self.topic_id:
            raise PositionOutOfRange(f"topic id changed from {self.topic_id} to {current}")

    def settle(self, source: Described) -> None:
        """Before the consumer ends: a re-created topic's snapshot completed, then the
        sweep of a generation read whole in the last stretch."""
        self.complete_recreated(source)
        self.sweep()

    def complete_recreated(self, source: Described) -> None:
        """Complete the generation recorded for this re-created topic once the topic holds
        the connector's whole new snapshot (recreated.py); until then, and where that
        cannot be told, say once what the operator must do."""
        found = unfinished(self._stored.load_generations(self.topic))
        if (
            found is None
            or found.topic_id != self.topic_id
            or any(found.boundaries.values())  # a --resnapshot's, which completes it itself
        ):
            return
        whole = self._whole_snapshot(source.describe)
        if whole:  # the ends read now lie above every read Connect had committed
            marks = {p: end.end for p, end in source.describe().ends.items()}
            self._stored.complete_generation(self.topic, found.number, marks)
            log.warning(
                "the re-created topic holds the connector's whole new snapshot: snapshot"
                " generation %d is complete, and the rows deleted meanwhile are removed once"
                " this table has read it",
                found.number,
                extra={"generation": found.number, "marks": marks},
            )
        elif (found.number, whole) not in self._told:
            self._told.add((found.number, whole))
            log.error(
                "the rows deleted while the broker held their deletes stay in the target:"
                " %s; run `replicator connector apply --resnapshot` (connector status asks"
                " for it)",
                "Kafka Connect cannot be asked whether the connector's new snapshot is whole"
                " (set REPLICATOR_CONNECT_URL)"
                if whole is None
                else "the new topic does not begin with a snapshot of the connector's (it"
                " kept its offsets, or the table was empty), or Connect has not committed it"
                " whole yet",
                extra={"generation": found.number},
            )

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
