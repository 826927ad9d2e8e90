"""A source TRUNCATE applied to the target (``on_truncate=apply``), in its place in the
order of the table's changes.

A truncate arrives as one event in one partition; the table's other changes are spread
over every partition, and partitions have no order between them.  When the truncate at
version ``(generation, lsn)`` is applied, the other partitions may already have
delivered changes made after it, and may still hold unread changes made before it.  So:

* the sink deletes only the rows whose stored version is older than the truncate (or
  that have none), and marks those versions deleted at the truncate's version, in one
  transaction with the truncate's position (``sink.truncate``).  A change made after
  the truncate keeps its row; an older change of a known row stays stale.  The other
  partitions keep their stored positions: they were applied up to there.
* from then on, the consumer drops every change older than the truncate
  (:class:`TruncateFloor`): a row the source inserted before the truncate, whose insert
  was still unread in another partition, does not come back.

The floor lives in the consumer's memory.  A restart after the truncate, before every
other partition stored a position past what it held unread, or another consumer of the
group reading those partitions, can apply such an insert, and its row comes back in the
target: ``replicator verify`` reports it and ``--repair`` removes it.
"""

from __future__ import annotations

from typing import Protocol

from replicator.errors import EventError
from replicator.events import ChangeEvent, PartitionPosition, RowChange


class Truncating(Protocol):
    def truncate(self, generation: int, lsn: int, positions: list[PartitionPosition]) -> int: ...


class Truncation:
    """Applies one consumer's source TRUNCATEs, and remembers the newest one's version
    (the floor: changes older than it are dropped)."""

    def __init__(self, sink: Truncating) -> None:
        self.sink = sink
        self.version: tuple[int, int] | None = None

    def apply(self, event: ChangeEvent, generation: int, topic_id: str | None) -> int:
        """Apply the truncate ``event`` and store its position; return the rows deleted.
        Everything read before it must have been applied."""
        if event.lsn is None:
            raise EventError("a TRUNCATE without a source LSN has no place in the order")
        p = event.position
        at = PartitionPosition(p.topic, p.partition, p.offset + 1, event.lsn, topic_id)
        deleted = self.sink.truncate(generation, event.lsn, [at])
        if self.version is None or (generation, event.lsn) > self.version:
            self.version = (generation, event.lsn)
        return deleted

    def drops(self, change: RowChange) -> bool:
        """``change`` was made before the truncate (a change without an LSN, an
        incremental snapshot read, reads the source as it is now and is kept)."""
        return (
            self.version is not None
            and change.lsn is not None
            and (change.generation, change.lsn) < self.version
        )
