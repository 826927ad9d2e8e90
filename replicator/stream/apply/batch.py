"""A batch: the row changes of consecutive events and the positions they take their
partitions to; and the fold that leaves one change per row.

A batch's positions cover every event it consumed, including those that produced no
row change (tombstones, truncates, dead letters): storing them with the batch's rows
moves the partitions past all of them at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from replicator.events import PartitionPosition, RowChange
from replicator.mapping.columns import TARGET_INDEX


@dataclass
class Batch:
    """Row changes waiting to be applied, and the positions they take the partitions to."""

    topic: str = ""
    topic_id: str | None = None  # the Kafka id of the topic its positions belong to
    changes: list[RowChange] = field(default_factory=list)
    messages: list[Any] = field(default_factory=list)  # the message of each change
    next_offsets: dict[int, int] = field(default_factory=dict)
    last_lsns: dict[int, int] = field(default_factory=dict)
    source_ts_ms: list[int] = field(default_factory=list)
    events: int = 0
    bytes: int = 0
    started: float = 0.0
    dead_letters: int = 0
    applied_at: float = 0.0  # wall clock when its transaction committed
    generations: int | None = None  # the newest generation its changes were stamped knowing

    def __len__(self) -> int:
        return self.events

    def advance(self, partition: int, offset: int, lsn: int | None) -> None:
        """One more event consumed, at ``offset`` of ``partition``."""
        if not self.events:
            self.started = time.monotonic()
        self.events += 1
        self.next_offsets[partition] = offset + 1
        if lsn is not None:
            self.last_lsns[partition] = lsn

    def add(
        self, change: RowChange, message: Any, source_ts_ms: int | None, generations: int = 0
    ) -> None:
        """A row change of the event just consumed (call :meth:`advance` too), stamped
        knowing the generations up to ``generations`` (the first change's counts: what a
        consumer knows only grows)."""
        if self.generations is None:
            self.generations = generations
        self.changes.append(change)
        self.messages.append(message)
        if source_ts_ms is not None:
            self.source_ts_ms.append(source_ts_ms)

    def positions(self) -> list[PartitionPosition]:
        """Where each partition resumes once this batch is applied."""
        return [
            PartitionPosition(self.topic, p, off, self.last_lsns.get(p), self.topic_id)
            for p, off in self.next_offsets.items()
        ]


def fold(changes: Sequence[RowChange]) -> list[RowChange]:
    """Pure. One change per run_id, the last in input order wins (input is log order per key,
    so the generations of one run_id's changes never decrease).
    A later upsert with unavailable columns takes those columns' values from an earlier upsert
    of the same run_id in the batch (the value did not change); only columns still unknown stay
    in `unavailable`. A delete followed by an upsert -> the upsert (no unavailable filling
    across a delete). The LSN kept is the winner's."""
    latest: dict[str, RowChange] = {}
    for change in changes:
        if change.unavailable and not change.delete:
            previous = latest.get(change.run_id)
            if previous is not None and not previous.delete:
                change = _fill(change, previous)
        latest[change.run_id] = change
    return list(latest.values())


def _fill(change: RowChange, previous: RowChange) -> RowChange:
    assert change.values is not None and previous.values is not None
    known = [n for n in change.unavailable - previous.unavailable if n in TARGET_INDEX]
    if not known:
        return change
    values = list(change.values)
    for name in known:
        values[TARGET_INDEX[name]] = previous.values[TARGET_INDEX[name]]
    still = change.unavailable.difference(known)
    return RowChange(
        change.run_id, change.lsn, False, tuple(values), frozenset(still), change.generation
    )
