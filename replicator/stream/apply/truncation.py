"""A source TRUNCATE applied to the target (``on_truncate=apply``), in its place in the
order of the table's changes.

A truncate arrives as one event in one partition; the table's other changes are spread
over every partition, and partitions have no order between them.  When the truncate at
version ``(generation, lsn)`` is applied, the other partitions may already have
delivered changes made after it, and may still hold unread changes made before it.  So,
in one transaction with the truncate's position (``sink.truncate``):

* the rows whose stored version is older than the truncate (or that have none) are
  deleted, and those versions marked deleted at the truncate's version: a change made
  after the truncate keeps its row; an older change of a known row stays stale;
* the table's truncate floor (``replicator_truncated``) rises to the truncate's version:
  from then on the versions claim (versions.py) refuses every change older than it, in
  whichever process applies it, so a row the source inserted before the truncate, whose
  insert was still unread in another partition, never comes back: not after a restart,
  not in another member of the group after a rebalance, not in a replay or a redrive;
* the other partitions keep their stored positions: they were applied up to there.

The truncate's transaction first locks the versions table against every claim (the
claims take ``ROW EXCLUSIVE``, the truncate ``SHARE ROW EXCLUSIVE``): a batch of another
consumer that claimed before commits first, and its rows older than the truncate are
deleted with the others; a batch that claims later waits for the truncate to commit and
then sees the floor (PostgreSQL takes a statement's snapshot after its locks).  So no
writer of the table, in any process, can slip an older change past the floor.
"""

from __future__ import annotations

from typing import Protocol

from replicator.errors import EventError
from replicator.events import ChangeEvent, PartitionPosition


class Truncating(Protocol):
    def truncate(self, generation: int, lsn: int, positions: list[PartitionPosition]) -> int: ...


def apply_truncate(
    sink: Truncating, event: ChangeEvent, generation: int, topic_id: str | None
) -> int:
    """Apply the truncate ``event`` and store its position; return the rows deleted.
    Everything read before it must have been applied."""
    if event.lsn is None:
        raise EventError("a TRUNCATE without a source LSN has no place in the order")
    p = event.position
    at = PartitionPosition(p.topic, p.partition, p.offset + 1, event.lsn, topic_id)
    return sink.truncate(generation, event.lsn, [at])
