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

    def full(self, max_rows: int, max_bytes: int) -> bool:
        """A limit is reached: apply it now."""
        return self.events >= max_rows or self.bytes >= max_bytes

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
    """Pure. One change per run_id: what applying ``changes`` one by one through the
    order guard (versions.py) would leave, for the sink to apply once.

    Arrival order is not version order: a key's events can sit in two partitions of one
    lane (the topic's partition count grew), and Connect can send older events again
    after a crash (``v1 v2 v1``).  So a change older, by ``(generation, lsn)``, than the
    newest one already folded for its run_id is dropped, as the guard would skip it;
    otherwise it replaces what was folded.  A partial upsert (unavailable columns) takes those
    columns from the change it replaces when that is an upsert (the value did not
    change); only columns still unknown stay in ``unavailable``; nothing is filled across
    a delete.  With a key's events reordered across partitions a partial can be filled
    from a version older than its direct predecessor: the table's events should not be
    split over partitions while columns are TOASTed (docs/explanation/guarantees.md)."""
    latest: dict[str, RowChange] = {}
    newest: dict[str, tuple[int, int]] = {}
    for change in changes:
        version = (change.generation, change.lsn)
        seen = newest.get(change.run_id)
        if seen is not None and version < seen:
            continue
        newest[change.run_id] = version
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
