"""Superseded dead letters: the ones a newer applied change of their row has replaced.

A dead letter is *superseded* when the versions table (stream/apply/versions.py) holds,
for its ``run_id``, an entry newer than the letter's version: a newer change of the row
was applied since (the source row was fixed and streamed, updated again, deleted, read
by a newer snapshot, or removed by a source TRUNCATE, which records its version as a
delete in every entry it passes).  The order guard would then refuse the letter's change
whatever the mapping made of it.  It compares as the guard does, ``(generation,
source_lsn)`` as a pair, generation first, and strictly: an entry equal to the letter's
version (the letter's own hold, written when it was dead-lettered, or the same change
applied after all) is no newer change.  The entry is all it reads: a row that never had
one (its first event was dead-lettered, then the source truncated) is not superseded,
and is mapped and tried; the guard's truncate floor still keeps such a letter from
being written.

``dlq redrive`` decides it before it maps the letter: a letter whose event the source no
longer means is never mapped again, so a value the mapping refuses (``'NaN'``, an
overflowing cost) cannot fail it again and again once the row was fixed at the source.
It is recorded as resolved, like a re-driven letter (state.py).  Nothing is lost by
skipping it: the newer entry holds the row's later state, and every change between the
two is an event of its own, applied or dead-lettered (and then decided on its own).
An entry is never lowered, so a letter superseded once stays superseded.

A letter without an LSN.  An incremental snapshot read carries none, and a snapshot
read's LSN does not order it (the transform gives every read version 0 of its
generation: versions.py says why).  Its version is the one the guard gives it,
``(generation, 0)``, the weakest of its generation, and it is superseded by any entry
strictly above that: a streamed change of its generation, a delete, anything of a newer
generation.  That is exactly when the guard would refuse it, so re-driving it could only
ever fail (an unmappable image) or be skipped as stale: deciding it first changes nothing
but that a letter the source no longer means stops failing.  Treating it as never
superseded (no LSN, nothing to compare) would leave a read the source has since fixed
failing on every redrive; giving it any higher version would let it claim an order it
cannot know.  An entry at ``(generation, 0)`` itself (its hold, another read of the
generation) does not supersede it: it is mapped and tried.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from replicator.events import SNAPSHOT_VERSION, ChangeEvent, Op

Version = tuple[int, int]


def version_of(event: ChangeEvent, generation: int) -> Version:
    """Pure. The version the order guard compares for ``event`` of ``generation``, as the
    transform gives it: its LSN, or :data:`~replicator.events.SNAPSHOT_VERSION` for a
    snapshot read or a change without an LSN."""
    if event.op is Op.READ or event.lsn is None:
        return generation, SNAPSHOT_VERSION
    return generation, event.lsn


def query(versions: str) -> sql.Composed:
    """Is the change ``(%(g)s, %(l)s)`` of ``%(run_id)s`` superseded (module docstring)?
    One boolean; reads ``versions``, writes nothing."""
    return sql.SQL(
        "SELECT EXISTS (SELECT FROM {v} v WHERE v.run_id = %(run_id)s"
        " AND (v.generation, v.source_lsn) > (%(g)s::integer, %(l)s::bigint))"
    ).format(v=sql.Identifier(versions))


class Superseded:
    """``superseded(event, generation)``: whether a newer applied change of the event's
    row supersedes it, read on ``conn`` (the target) in the versions table ``versions``."""

    def __init__(self, conn: psycopg.Connection[Any], versions: str) -> None:
        self._conn = conn
        self._query = query(versions)

    def __call__(self, event: ChangeEvent, generation: int) -> bool:
        if not isinstance(event.key, str):  # no row named: nothing to compare with
            return False
        g, lsn = version_of(event, generation)
        row = self._conn.execute(self._query, {"run_id": event.key, "g": g, "l": lsn}).fetchone()
        return bool(row and row[0])
