"""Snapshot generations: a snapshot taken again wins over the older streamed changes,
without beating a change committed after it, and removes the rows deleted meanwhile.

The problem.  A version that is only an LSN cannot order a second snapshot: its reads
carry the snapshot's LSN S, yet a transaction in flight during the snapshot has change
LSNs below S and is streamed after it (the snapshot did not see it).  So a snapshot
read carries the weakest version (0) and only fills rows no streamed change touched.
After the slot is lost and ``replicator connector apply --resnapshot`` takes a new
snapshot, that rule leaves rows updated in the gap stale and rows deleted in the gap
present.

The design.  A version is the pair ``(generation, lsn)``, compared in that order.

1. ``--resnapshot`` stops the connector (its records are flushed), reads the ends of the
   topic's partitions and records generation N with them as ``boundaries``, and only
   then starts the new connector.  Every event at or after ``boundaries[p]`` is the new
   connector's: generation N.  Every event before is an older generation's.
2. Per partition, the new connector writes the snapshot reads, then the streamed
   changes; a row's events all go to one partition, in that order.  A snapshot read
   is ``(N, 0)``; a streamed change ``(N, lsn)``, lsn > 0.
3. A snapshot read of generation N beats every change of generations below N: those
   were all committed before the new slot existed, so the snapshot already holds their
   effect (and a later state).  A streamed change of generation N beats the snapshot
   read whatever its LSN: it was streamed by the new slot, so it committed after the
   snapshot's consistent point (the in-flight transaction above is exactly such a
   change).  Two streamed changes of one row keep their LSN order (row locks
   serialise them), in any generation.
4. Completion.  Once Connect has committed an offset past the snapshot (it commits only
   a prefix of records the broker acknowledged), every snapshot read is in the log,
   below the ends read then: the ``marks``.  A target whose stored positions reach the
   marks holds every snapshot read and every change streamed before them; a row whose
   version is still of a generation below N was neither in the snapshot nor changed
   since: it was deleted in the gap.  The sweep removes those rows and records the
   delete as ``(N, 0)``, so an older change can never bring them back, while a change
   streamed later (``(N, lsn)``) still applies.
5. A topic created later (a broker restarted empty) holds only events produced after
   every recorded generation: all of it is of the newest generation (boundaries are
   offsets of one topic, recognised by its Kafka id).  When the consumer finds its stored
   positions in an older topic, it records a generation for the new one
   (:func:`record_recreated`): the events the broker lost are known again only through
   the connector's new snapshot, which must then win over the older changes.

The consumer stamps each event from the generations it loaded; the sink checks, inside
the batch's transaction, that no generation was recorded since (a new one is recorded
before any of its events exists), else the batch rolls back and the partitions are
re-read from the stored positions with the generations reloaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.stream.apply import versions as versions_sql

TABLE = "replicator_generations"
SWEPT = "replicator_swept"


@dataclass(frozen=True, slots=True)
class Generation:
    """Generation ``number`` of a topic: it starts at ``boundaries`` (partition -> offset)
    in the topic whose Kafka id is ``topic_id``; ``marks``: the ends once its snapshot
    was wholly written (None: not yet)."""

    number: int
    topic_id: str | None
    boundaries: Mapping[int, int]
    marks: Mapping[int, int] | None = None


class Generations:
    """The generation of each event of one topic, as the consumer of the topic whose
    Kafka id is ``topic_id`` sees it (pure)."""

    def __init__(self, rows: Sequence[Generation] = (), topic_id: str | None = None) -> None:
        self.latest = max((g.number for g in rows), default=0)
        self._base = 0
        self._steps: list[tuple[int, Mapping[int, int]]] = []
        for g in sorted(rows, key=lambda g: g.number):
            if g.topic_id is not None and topic_id is not None and g.topic_id != topic_id:
                self._base, self._steps = g.number, []  # an older topic: all of this is later
            else:
                self._steps.append((g.number, g.boundaries))

    def at(self, partition: int, offset: int) -> int:
        """The generation of the event at ``offset`` of ``partition`` (a partition a
        generation has no boundary for did not exist then: wholly of it)."""
        number = self._base
        for candidate, boundaries in self._steps:
            if offset >= boundaries.get(partition, 0):
                number = candidate
        return number


def load(conn: psycopg.Connection[Any], topic: str) -> list[Generation]:
    """The recorded generations of ``topic``."""
    rows = conn.execute(
        f"SELECT generation, topic_id, boundaries, marks FROM {TABLE} WHERE topic = %s",
        [topic],
    ).fetchall()
    return [Generation(n, tid, _offsets(b), _offsets(m) if m else None) for n, tid, b, m in rows]


def unfinished(rows: Sequence[Generation]) -> Generation | None:
    """Pure. The newest generation when its snapshot never completed (no marks): a
    ``--resnapshot`` still running, or one interrupted between recording it and
    completing it.  Until one completes, the rows deleted while nothing streamed are not
    removed (an older unfinished one is superseded by any newer generation)."""
    newest = max(rows, key=lambda g: g.number, default=None)
    return newest if newest is not None and newest.marks is None else None


def latest(conn: psycopg.Connection[Any], topic: str) -> int:
    """The newest generation number of ``topic`` (0: none recorded)."""
    row = conn.execute(
        f"SELECT coalesce(max(generation), 0) FROM {TABLE} WHERE topic = %s", [topic]
    ).fetchone()
    return int(row[0]) if row else 0


def settled(conn: psycopg.Connection[Any], topic: str) -> int:
    """The newest generation of ``topic`` whose snapshot is complete (0: none): the one a
    writer reading the source now may claim (verify/from_source.py).  Its slot existed
    before its snapshot completed, so before now: every change of an older generation is
    in what the source shows, and every later change of it streams with a larger LSN.  A
    newer generation recorded but not complete may not have its slot yet: a change made
    before it exists reaches the target only through that generation's snapshot, which
    an image claimed in it could refuse."""
    row = conn.execute(
        f"SELECT coalesce(max(generation), 0) FROM {TABLE} WHERE topic = %s AND marks IS NOT NULL",
        [topic],
    ).fetchone()
    return int(row[0]) if row else 0


def record(
    conn: psycopg.Connection[Any], topic: str, topic_id: str | None, boundaries: Mapping[int, int]
) -> int:
    """Record the next generation of ``topic``, starting at ``boundaries``; its number."""
    row = conn.execute(
        f"INSERT INTO {TABLE} (topic, generation, topic_id, boundaries)"
        f" SELECT %s, coalesce(max(generation), 0) + 1, %s, %s FROM {TABLE} WHERE topic = %s"
        " RETURNING generation",
        [topic, topic_id, _json(boundaries), topic],
    ).fetchone()
    assert row is not None
    return int(row[0])


def record_recreated(
    conn: psycopg.Connection[Any], topic: str, topic_id: str, partitions: Sequence[int]
) -> int | None:
    """Record the next generation of ``topic`` for the re-created topic ``topic_id``, from
    its start, unless one is recorded for it already (another member, or a
    ``--resnapshot`` since); its number, or None.

    A topic re-created under stored positions (a broker that lost it) took with it every
    event the table had not applied, and Connect's offsets went with the broker too, so
    the connector snapshots again into the new topic.  That snapshot is the only account
    of what was lost: as a new generation it wins over the older changes (rule 3) instead
    of only filling rows (rule 5).  No marks: nothing here can tell when the snapshot is
    whole, so the rows deleted meanwhile are removed only by a ``--resnapshot``, which
    ``connector status`` asks for while this generation is unfinished."""
    row = conn.execute(
        f"INSERT INTO {TABLE} (topic, generation, topic_id, boundaries)"
        f" SELECT %s, coalesce(max(generation), 0) + 1, %s, %s FROM {TABLE} WHERE topic = %s"
        " HAVING NOT coalesce(bool_or(topic_id = %s), false)"
        " ON CONFLICT (topic, generation) DO NOTHING RETURNING generation",
        [topic, topic_id, _json({p: 0 for p in partitions}), topic, topic_id],
    ).fetchone()
    return None if row is None else int(row[0])


def complete(
    conn: psycopg.Connection[Any], topic: str, number: int, marks: Mapping[int, int]
) -> None:
    """Generation ``number``'s snapshot is wholly in the log, below ``marks``."""
    conn.execute(
        f"UPDATE {TABLE} SET marks = %s, completed_at = now() WHERE topic = %s AND generation = %s",
        [_json(marks), topic, number],
    )


def swept(conn: psycopg.Connection[Any], table: str, topic: str, number: int) -> int | None:
    """The rows the sweep of generation ``number`` removed from ``table`` (None: not run)."""
    row = conn.execute(
        f"SELECT swept_rows FROM {SWEPT} WHERE target_table = %s AND topic = %s"
        " AND generation >= %s ORDER BY generation LIMIT 1",
        [table, topic, number],
    ).fetchone()
    return None if row is None else int(row[0])


_DUE = f"""
    SELECT g.generation, g.topic_id, g.boundaries, g.marks FROM {TABLE} g
    WHERE g.topic = %(topic)s AND g.marks IS NOT NULL
      AND NOT EXISTS (SELECT FROM {SWEPT} w WHERE w.target_table = %(table)s
                      AND w.topic = g.topic AND w.generation >= g.generation)
    ORDER BY g.generation DESC LIMIT 1"""


def due(conn: psycopg.Connection[Any], table: str, topic: str) -> Generation | None:
    """The newest completed generation of ``topic`` not swept on ``table`` yet."""
    row = conn.execute(_DUE, {"topic": topic, "table": table}).fetchone()
    if row is None:
        return None
    number, topic_id, boundaries, marks = row
    return Generation(number, topic_id, _offsets(boundaries), _offsets(marks))


def sweep(
    conn: psycopg.Connection[Any],
    generation: Generation,
    *,
    table: str,
    versions: str,
    topic: str,
    apply_deletes: bool,
) -> int | None:
    """In the caller's transaction, once ``table``'s positions reach the generation's
    marks (module docstring, 4): remove the rows of older generations, record their
    versions as deleted in this one, and record the sweep.  The rows removed; None when
    another consumer of the table swept it."""
    claimed = conn.execute(
        f"INSERT INTO {SWEPT} (target_table, topic, generation, swept_rows) VALUES (%s, %s, %s, 0)"
        " ON CONFLICT DO NOTHING RETURNING generation",
        [table, topic, generation.number],
    ).fetchone()
    if claimed is None:
        return None
    row = conn.execute(
        versions_sql.sweep(versions, table),
        {"number": generation.number, "apply_deletes": apply_deletes},
    ).fetchone()
    removed = int(row[0]) if row else 0
    conn.execute(
        f"UPDATE {SWEPT} SET swept_rows = %s WHERE target_table = %s AND topic = %s"
        " AND generation = %s",
        [removed, table, topic, generation.number],
    )
    return removed


def _offsets(value: Any) -> dict[int, int]:
    return {int(p): int(o) for p, o in (value or {}).items()}


def _json(offsets: Mapping[int, int]) -> str:
    return json.dumps({str(p): int(o) for p, o in sorted(offsets.items())})
