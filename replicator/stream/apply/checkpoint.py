"""The positions table (``replicator_offsets``): the only code that reads or writes it.

A row per ``(target_table, topic, kafka_partition)`` holds ``next_offset``, the offset of
the NEXT message to read, the source LSN of the last event below it, and the Kafka id of
the topic that offset belongs to (stream/origin.py checks it before it is used).

Invariants:

1. Positions are written only inside the transaction that applies the rows their events
   produced (:meth:`Checkpoint.store` takes the sink's connection), so a stored position
   never disagrees with the table's content.
2. Fencing (with a :class:`PositionFence`): a partition's position is stored only if the
   stored ``next_offset`` is still the one this consumer last loaded or stored (or still
   absent when it found none), compare-and-set in the batch's transaction.  Otherwise
   :class:`~replicator.errors.PositionsFenced` rolls the batch back: someone else moved
   the positions (``replicator replay --swap`` handed the shadow table's over, or the
   partition has another owner), and the consumer must re-read them.
3. Closed (``replicator cutover``): every partition of the topic holds :data:`CLOSED` in
   place of an offset.  No fenced store can move it (no consumer expects it) or insert
   beside it, so no batch commits after the cutover: the store raises ``CutOver`` (the
   consumer's own stream was closed, not moved by a stranger), and so does a consumer
   that re-reads its positions and finds the marker; either way it ends.
   :meth:`Checkpoint.reopen` (a rollback) puts back the positions :meth:`Checkpoint.close`
   returned.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from replicator.db.connect import connect, mapped_errors
from replicator.errors import CutOver, PositionsFenced
from replicator.events import PartitionPosition

#: ``next_offset`` of a partition whose stream was closed by a cutover.
CLOSED = -1


class PositionFence:
    """The positions one consumer expects to find stored: what it last loaded or stored,
    per ``(topic, partition)``; a partition it does not know is expected to be absent.

    Shared by the sinks of one consumer (positions may be loaded on one connection and
    stored on another); thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[str, int], int] = {}

    def expected(self, topic: str, partition: int) -> int | None:
        with self._lock:
            return self._known.get((topic, partition))

    def loaded(self, topic: str, positions: Mapping[int, PartitionPosition]) -> None:
        """Everything stored for ``topic`` was read: forget what was known before."""
        with self._lock:
            for key in [k for k in self._known if k[0] == topic]:
                del self._known[key]
            self._known.update(((topic, p), pos.next_offset) for p, pos in positions.items())

    def stored(self, positions: Sequence[PartitionPosition], *, replace: bool = False) -> None:
        """``positions`` were committed (``replace``: and nothing else is stored any more)."""
        with self._lock:
            if replace:
                self._known.clear()
            self._known.update(((p.topic, p.partition), p.next_offset) for p in positions)


class Checkpoint:
    """The positions of one target table, read and written on the caller's connection."""

    def __init__(
        self, offsets_table: str, target_table: str, fence: PositionFence | None = None
    ) -> None:
        self.offsets_table = offsets_table
        self.target_table = target_table
        self.fence = fence  # None: positions are stored unconditionally
        o = sql.Identifier(offsets_table)
        q = sql.SQL
        statements = {
            "load": q(
                "SELECT kafka_partition, next_offset, last_lsn, topic_id FROM {o}"
                " WHERE target_table = %s AND topic = %s ORDER BY kafka_partition"
            ),
            "store": q(
                "INSERT INTO {o} AS o (target_table, topic, kafka_partition, next_offset, last_lsn,"
                " topic_id) SELECT %s, * FROM unnest(%s::text[], %s::int[], %s::bigint[],"
                " %s::bigint[], %s::text[])"
                " ON CONFLICT (target_table, topic, kafka_partition) DO UPDATE"
                " SET next_offset = EXCLUDED.next_offset, topic_id = EXCLUDED.topic_id,"
                " last_lsn = COALESCE(EXCLUDED.last_lsn, o.last_lsn), updated_at = now()"
            ),
            # compare-and-set: a row moves only from the expected offset (NULL: only when absent)
            "store_fenced": q(
                "WITH want AS (SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[],"
                " %s::bigint[], %s::text[], %s::bigint[])"
                " AS w(topic, part, next_offset, last_lsn, topic_id, expected)),"
                " moved AS (UPDATE {o} AS o SET next_offset = w.next_offset,"
                " topic_id = w.topic_id,"
                " last_lsn = COALESCE(w.last_lsn, o.last_lsn), updated_at = now() FROM want w"
                " WHERE o.target_table = %s AND o.topic = w.topic AND o.kafka_partition = w.part"
                " AND o.next_offset = w.expected RETURNING 1),"
                " added AS (INSERT INTO {o} (target_table, topic, kafka_partition, next_offset,"
                " last_lsn, topic_id) SELECT %s, w.topic, w.part, w.next_offset, w.last_lsn,"
                " w.topic_id FROM want w"
                " WHERE w.expected IS NULL ON CONFLICT DO NOTHING RETURNING 1)"
                " SELECT (SELECT count(*) FROM moved) + (SELECT count(*) FROM added)"
            ),
            "found": q(
                "SELECT topic, kafka_partition, next_offset FROM {o} WHERE target_table = %s"
                " AND (topic, kafka_partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))"
            ),
            "found_locked": q(
                "SELECT topic, kafka_partition, next_offset FROM {o} WHERE target_table = %s"
                " AND (topic, kafka_partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))"
                " FOR SHARE"
            ),
            "forget": q("DELETE FROM {o} WHERE target_table = %s"),
            "closed": q(
                "SELECT EXISTS (SELECT FROM {o} WHERE target_table = %s AND topic = %s"
                " AND next_offset = -1)"
            ),
            "forget_topic": q("DELETE FROM {o} WHERE target_table = %s AND topic = %s"),
            "move": q("UPDATE {o} SET target_table = %s WHERE target_table = %s"),
            "close": q(
                "INSERT INTO {o} (target_table, topic, kafka_partition, next_offset, topic_id)"
                " SELECT %s, %s, p, -1, NULL FROM unnest(%s::int[]) AS p"
                " ON CONFLICT (target_table, topic, kafka_partition)"
                " DO UPDATE SET next_offset = -1, updated_at = now()"
            ),
        }
        self._sql = {k: v.format(o=o).as_string(None) for k, v in statements.items()}

    def load(self, conn: psycopg.Connection[Any], topic: str) -> dict[int, PartitionPosition]:
        """The stored positions of ``topic``, by partition (the fence learns them)."""
        rows = conn.execute(self._sql["load"], [self.target_table, topic]).fetchall()
        positions = {p: PartitionPosition(topic, p, *rest) for p, *rest in rows}
        if self.fence is not None:
            self.fence.loaded(topic, positions)
        return positions

    def store(
        self, conn: psycopg.Connection[Any], positions: Sequence[PartitionPosition]
    ) -> list[PartitionPosition]:
        """Store ``positions`` (the last one per partition wins) in the caller's transaction;
        return what was stored.  Call :meth:`committed` once that transaction committed."""
        if not positions:
            return []
        last = {(p.topic, p.partition): p for p in positions}
        rows = list(last.values())
        values = [
            [p.topic for p in rows],
            [p.partition for p in rows],
            [p.next_offset for p in rows],
            [p.last_lsn for p in rows],
            [p.topic_id for p in rows],
        ]
        if self.fence is None:
            conn.execute(self._sql["store"], [self.target_table, *values])
            return rows
        expected = [self.fence.expected(p.topic, p.partition) for p in rows]
        (count,) = conn.execute(
            self._sql["store_fenced"], [*values, expected, self.target_table, self.target_table]
        ).fetchone() or (0,)
        if count != len(rows):
            found = {
                (topic, part): offset
                for topic, part, offset in conn.execute(
                    self._sql["found"], [self.target_table, values[0], values[1]]
                )
            }
            if CLOSED in found.values():
                raise CutOver(f"the stream into {self.target_table!r} was closed by a cutover")
            moved = [
                f"{p.topic}[{p.partition}]: expected {want}, found {found.get(key)}"
                for (key, p), want in zip(last.items(), expected, strict=True)
                if found.get(key) != want
            ]
            raise PositionsFenced(
                f"the stored positions of {self.target_table!r} were moved by another writer"
                f" ({'; '.join(moved) or 'concurrently'}); re-read them"
            )
        return rows

    def check(self, conn: psycopg.Connection[Any], positions: Sequence[PartitionPosition]) -> None:
        """Without storing anything: the partitions of ``positions`` are still where the
        fence expects them, and stay so until the caller's transaction ends (share-locked;
        a cutover closing them waits).  Raises :class:`PositionsFenced` otherwise.  For a
        transaction that writes rows of a batch without its positions (a dead-letter
        bisection's halves): no such write commits once the positions moved."""
        if self.fence is None or not positions:
            return
        keys = sorted({(p.topic, p.partition) for p in positions})
        found = {
            (topic, part): offset
            for topic, part, offset in conn.execute(
                self._sql["found_locked"],
                [self.target_table, [k[0] for k in keys], [k[1] for k in keys]],
            )
        }
        moved = [
            f"{topic}[{part}]: expected {self.fence.expected(topic, part)},"
            f" found {found.get((topic, part))}"
            for topic, part in keys
            if found.get((topic, part)) != self.fence.expected(topic, part)
        ]
        if CLOSED in found.values():
            raise CutOver(f"the stream into {self.target_table!r} was closed by a cutover")
        if moved:
            raise PositionsFenced(
                f"the stored positions of {self.target_table!r} were moved by another writer"
                f" ({'; '.join(moved)}); re-read them"
            )

    def committed(self, stored: Sequence[PartitionPosition], *, replace: bool = False) -> None:
        """The transaction that stored ``stored`` committed: the fence expects them now."""
        if self.fence is not None:
            self.fence.stored(stored, replace=replace)

    def forget(self, conn: psycopg.Connection[Any]) -> None:
        """Delete every position of this table (a replay starting from the beginning)."""
        conn.execute(self._sql["forget"], [self.target_table])

    def close(
        self, conn: psycopg.Connection[Any], topic: str, partitions: Sequence[int]
    ) -> list[PartitionPosition]:
        """Close the stream of ``topic`` (invariant 3) in the caller's transaction; return the
        positions it held, for :meth:`reopen`."""
        held = [p for p in self.load(conn, topic).values() if p.next_offset != CLOSED]
        parts = sorted({*partitions, *(p.partition for p in held)})
        conn.execute(self._sql["close"], [self.target_table, topic, parts])
        return held

    def reached(
        self,
        conn: psycopg.Connection[Any],
        topic: str,
        marks: Mapping[int, int],
        topic_id: str | None,
    ) -> bool:
        """Every partition of ``topic`` is stored at or past ``marks``, in the topic whose
        Kafka id is ``topic_id`` (positions of another topic never reach them)."""
        rows = conn.execute(self._sql["load"], [self.target_table, topic]).fetchall()
        stored = {p: (offset, stored_id) for p, offset, _, stored_id in rows}
        for p, mark in marks.items():
            offset, stored_id = stored.get(p, (None, None))
            if mark > 0 and (
                offset is None
                or offset < mark
                or (stored_id and topic_id and stored_id != topic_id)
            ):
                return False
        return True

    def closed(self, conn: psycopg.Connection[Any], topic: str) -> bool:
        """The stream of ``topic`` was closed by a cutover (the fence learns nothing)."""
        row = conn.execute(self._sql["closed"], [self.target_table, topic]).fetchone()
        return bool(row and row[0])

    def reopen(
        self, conn: psycopg.Connection[Any], topic: str, held: Sequence[PartitionPosition]
    ) -> None:
        """Undo :meth:`close`: the positions ``held`` back, the markers gone."""
        conn.execute(self._sql["forget_topic"], [self.target_table, topic])
        conn.execute(
            self._sql["store"],
            [
                self.target_table,
                [p.topic for p in held],
                [p.partition for p in held],
                [p.next_offset for p in held],
                [p.last_lsn for p in held],
                [p.topic_id for p in held],
            ],
        )

    def move(self, conn: psycopg.Connection[Any], to_table: str) -> None:
        """Hand this table's positions over to ``to_table`` (a swap renaming tables)."""
        conn.execute(self._sql["move"], [to_table, self.target_table])


def read_positions(dsn: str, offsets_table: str, target_table: str, topic: str) -> dict[int, int]:
    """The next offsets stored for ``target_table`` (a short connection of its own)."""
    checkpoint = Checkpoint(offsets_table, target_table)
    with (
        connect(dsn, "the target database") as conn,
        mapped_errors(f"read the positions of {target_table!r}"),
    ):
        stored = checkpoint.load(conn, topic)
    return {p: pos.next_offset for p, pos in stored.items()}
