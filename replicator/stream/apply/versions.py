"""The order guard's table, ``<target>_versions``: every statement that writes a version.

What a version is.  Per ``run_id``, the version of the newest change applied to the
row, ``(generation, source_lsn)``, and whether that change was a delete:

* ``generation``: the snapshot generation of the change (:mod:`.generations`), 0 until
  a snapshot is taken again;
* ``source_lsn``: the change's LSN in the source's WAL; 0 for a snapshot read or a
  backfilled row (the weakest version of its generation: it only fills rows no streamed
  change of its generation touched).  A change without an LSN (an incremental snapshot
  read) has no version: it is applied unconditionally and leaves the stored one as it
  was (staged as -1).

What beats what.  Versions compare as ``(generation, source_lsn)``, in that order.  A
change is applied when its version is at least the stored one (equal: a redelivery,
applied again harmlessly) and is stale, skipped, when older.  A delete keeps its entry,
so an older image can never bring the row back; a source TRUNCATE and a re-snapshot's
sweep record their deletes the same way.  A table's truncate floor
(``replicator_truncated``, truncation.py) is the version of the newest source TRUNCATE
applied to it: a change with an LSN older than the floor is never claimed, whoever
applies it (the stream, a replay, a redrive, another member of the group).

What a tool that is not the stream records.  A tool that writes rows from the source
as it is, while the source is locked (the cutover's repair, the rollback's restore),
records ``(the newest generation known, the WAL insert position)`` (:func:`as_of_now`).
Every change committed before the lock has a smaller LSN, and no stream event carries
a newer generation than the newest one recorded, so no event read before that moment
can overwrite the row; a change made after it has a larger LSN and still applies.  The
backfill writes images read at a snapshot taken after the slot existed: it records
``source_lsn`` 0, a snapshot read's version, and claims only entries that are absent or
hold no streamed change (:func:`claim_snapshot_reads`).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from replicator.db.schema import TRUNCATED_TABLE

q = sql.SQL

#: ``source_lsn`` of a staged change without an LSN: no version (applied unconditionally).
NO_VERSION = -1


def _behind_floor(table: str) -> sql.Composed:
    """True for a staged change ``s`` older than ``table``'s truncate floor.

    The floor is read by an uncorrelated subquery, which PostgreSQL runs once per
    statement (an InitPlan) rather than once per staged row; in the statement's snapshot
    either way.  No floor (no row) compares as NULL: not behind."""
    return q(
        "(s.lsn IS NOT NULL AND COALESCE((s.gen, s.lsn) < (SELECT f.generation, f.source_lsn"
        " FROM {f} f WHERE f.target_table = {t}), false))"
    ).format(f=sql.Identifier(TRUNCATED_TABLE), t=sql.Literal(table))


def claim(versions: str, table: str, stage: sql.Composable) -> str:
    """The sink's claim: a version for every applicable change of ``stage`` (the upsert
    also row-locks it against a concurrent writer), then the unclaimed changes dropped
    from the stage and returned as ``(run_id, del, unresolved, behind_floor)``: stale
    changes, changes older than the table's truncate floor (``behind_floor``), and
    partial changes whose target row is missing (``unresolved``)."""
    v, t, s = sql.Identifier(versions), sql.Identifier(table), stage
    return (
        q(
            "WITH won AS ("
            " INSERT INTO {v} AS v (run_id, generation, source_lsn, deleted)"
            " SELECT s.run_id, s.gen, COALESCE(s.lsn, {none}), s.del FROM {s} s"
            " WHERE (s.unavail IS NULL OR EXISTS (SELECT FROM {t} t WHERE t.run_id = s.run_id))"
            " AND NOT {behind}"
            " ON CONFLICT (run_id) DO UPDATE"
            " SET generation = CASE WHEN EXCLUDED.source_lsn = {none} THEN v.generation"
            " ELSE EXCLUDED.generation END, source_lsn = CASE WHEN EXCLUDED.source_lsn = {none}"
            " THEN v.source_lsn ELSE EXCLUDED.source_lsn END,"
            " deleted = EXCLUDED.deleted"
            " WHERE EXCLUDED.source_lsn = {none}"
            " OR (EXCLUDED.generation, EXCLUDED.source_lsn) >= (v.generation, v.source_lsn)"
            " RETURNING v.run_id)"
            " DELETE FROM {s} s WHERE NOT EXISTS (SELECT FROM won WHERE won.run_id = s.run_id)"
            " RETURNING s.run_id, s.del, s.unavail IS NOT NULL AND NOT {behind}"
            " AND NOT EXISTS (SELECT FROM {t} t WHERE t.run_id = s.run_id)"
            " AND NOT EXISTS (SELECT FROM {v} v WHERE v.run_id = s.run_id"
            " AND (v.generation, v.source_lsn) > (s.gen, s.lsn)), {behind}"
        )
        .format(s=s, t=t, v=v, none=sql.Literal(NO_VERSION), behind=_behind_floor(table))
        .as_string(None)
    )


def truncate(versions: str, table: str) -> tuple[str, str, str, str]:
    """A source TRUNCATE at version ``(%(g)s, %(l)s)`` (truncation.py), four statements:
    the versions table locked against every claim (``SHARE ROW EXCLUSIVE`` conflicts with
    the claims' ``ROW EXCLUSIVE``: batches in flight commit first, later ones wait and
    then see the floor), the rows no later change wrote deleted, their versions made
    deletes at the truncate's, and the table's floor raised to it (never lowered)."""
    v, t = sql.Identifier(versions), sql.Identifier(table)
    lock = q("LOCK TABLE {v} IN SHARE ROW EXCLUSIVE MODE").format(v=v)
    newer = q(
        "SELECT FROM {v} v WHERE v.run_id = t.run_id"
        " AND (v.generation, v.source_lsn) > (%(g)s::integer, %(l)s::bigint)"
    ).format(v=v)
    rows = q("DELETE FROM {t} t WHERE NOT EXISTS ({newer})").format(t=t, newer=newer)
    marked = q(
        "UPDATE {v} SET generation = %(g)s, source_lsn = %(l)s, deleted = true"
        " WHERE (generation, source_lsn) < (%(g)s::integer, %(l)s::bigint)"
    ).format(v=v)
    floor = q(
        "INSERT INTO {f} AS f (target_table, generation, source_lsn) VALUES ({t}, %(g)s, %(l)s)"
        " ON CONFLICT (target_table) DO UPDATE SET generation = EXCLUDED.generation,"
        " source_lsn = EXCLUDED.source_lsn, truncated_at = now()"
        " WHERE (EXCLUDED.generation, EXCLUDED.source_lsn) > (f.generation, f.source_lsn)"
    ).format(f=sql.Identifier(TRUNCATED_TABLE), t=sql.Literal(table))
    return (
        lock.as_string(None),
        rows.as_string(None),
        marked.as_string(None),
        floor.as_string(None),
    )


def sweep(versions: str, table: str) -> sql.Composed:
    """A re-snapshot's sweep (generations.py, 4): the rows of generations older than
    ``%(number)s`` are deleted (when ``%(apply_deletes)s``) and their versions recorded as
    deletes at ``(number, 0)``; returns the rows removed."""
    return q(
        "WITH gone AS ("
        " UPDATE {v} v SET generation = %(number)s, source_lsn = 0, deleted = true"
        " WHERE v.generation < %(number)s AND NOT v.deleted RETURNING v.run_id),"
        " removed AS ("
        " DELETE FROM {t} t USING gone WHERE %(apply_deletes)s AND t.run_id = gone.run_id"
        " RETURNING t.run_id)"
        " SELECT count(*) FROM removed"
    ).format(v=sql.Identifier(versions), t=sql.Identifier(table))


def claim_snapshot_reads(versions: str, ids: sql.Composable) -> sql.Composed:
    """``INSERT ... RETURNING run_id``, for a CTE: version 0 claimed for the run_ids of
    ``ids`` (a query of one column), the sink's rule for LSN 0: inserted, or taken over
    from an entry holding 0 or -1 (never a streamed change).  The claimed rows stay
    locked until commit, so a streamed change of the same row waits, then wins."""
    return q(
        "INSERT INTO {v} AS v (run_id, source_lsn, deleted) SELECT i, 0, false FROM ({ids}) AS c(i)"
        " ON CONFLICT (run_id) DO UPDATE"
        " SET source_lsn = GREATEST(v.source_lsn, EXCLUDED.source_lsn), deleted = EXCLUDED.deleted"
        " WHERE EXCLUDED.source_lsn >= v.source_lsn"
        " RETURNING v.run_id"
    ).format(v=sql.Identifier(versions), ids=ids)


def as_of_now(
    conn: psycopg.Connection[Any],
    schema: str,
    versions: str,
    rows: sql.Composable,
    generation: int,
) -> None:
    """Record, in the caller's transaction, the version of rows written from the locked
    source (module docstring): ``rows`` yields ``(run_id, deleted)``; each gets
    ``(generation, WAL insert position)``, whatever it held before.  ``generation``: the
    newest one recorded for the topic (:func:`.generations.latest`)."""
    v = q("{}.{}").format(sql.Identifier(schema), sql.Identifier(versions))
    conn.execute(
        q(
            "INSERT INTO {v} AS v (run_id, generation, source_lsn, deleted)"
            " SELECT r.run_id, %s,"
            " (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint, r.deleted"
            " FROM ({rows}) AS r(run_id, deleted)"
            " ON CONFLICT (run_id) DO UPDATE SET generation = EXCLUDED.generation,"
            " source_lsn = EXCLUDED.source_lsn, deleted = EXCLUDED.deleted"
        ).format(v=v, rows=rows),
        [generation],
    )


def empty(versions: str, table: str) -> list[sql.Composed]:
    """Forget every version of ``table``, its truncate floor with them, and its rows (a
    replay's shadow table, rebuilt from the start of the topic)."""
    return [
        q("TRUNCATE {t}, {v}").format(t=sql.Identifier(table), v=sql.Identifier(versions)),
        q("DELETE FROM {f} WHERE target_table = {t}").format(
            f=sql.Identifier(TRUNCATED_TABLE), t=sql.Literal(table)
        ),
    ]


def move_floor(conn: psycopg.Connection[Any], from_table: str, to_table: str | None) -> None:
    """Hand ``from_table``'s truncate floor to ``to_table`` (None: drop it), in the caller's
    transaction (a swap renaming tables moves their floors with them)."""
    f = sql.Identifier(TRUNCATED_TABLE)
    if to_table is None:
        conn.execute(q("DELETE FROM {} WHERE target_table = %s").format(f), [from_table])
    else:
        conn.execute(
            q("UPDATE {} SET target_table = %s WHERE target_table = %s").format(f),
            [to_table, from_table],
        )
