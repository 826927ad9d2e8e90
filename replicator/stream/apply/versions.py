"""The order guard's table, ``<target>_versions``: the ordering rule, and every statement
that writes a version.

What a version is.  Every change of a row carries one, ``(generation, source_lsn)``,
compared as a pair, generation first:

* ``generation``: the snapshot generation of the change (:mod:`.generations`), 0 until a
  snapshot is taken again;
* ``source_lsn``: the change's LSN in the source's WAL, or 0, the weakest version of its
  generation, for a change whose LSN cannot be trusted to order it: a snapshot read
  (Debezium stamps the snapshot's LSN, yet a transaction in flight during the snapshot
  streams later with an LSN below it), a read without an LSN (Debezium's incremental
  snapshot: the same in-flight transaction can stream after the read with an LSN below
  any the read could claim), a backfilled row, a hold.  There is no change without a
  version.

The rule.  Per ``run_id`` the table holds the version of the newest change applied and
whether it was a delete (the *entry*); per target table ``replicator_truncated`` holds the
version of the newest source TRUNCATE applied (the *floor*, truncation.py).  A change
with version ``v`` is applied -- its image written, or the row deleted, and ``(v,
delete)`` recorded as the entry -- if and only if

1. ``v`` is not older than the table's floor, and
2. the row has no entry, or ``v`` is at least the entry's version (equal: the same
   change again, or a second image of a weakest version, written again harmlessly);

else it is skipped and changes nothing.  Two refinements follow from what a change
carries: a change that does not carry the whole row (unchanged TOASTed columns, or a
hold, which carries none) applies only to a row the target has; and a re-snapshot's
sweep, a delete inferred from a row's absence from the snapshot of generation N, deletes
at ``(N, 0)`` only the rows whose entry is strictly older (:func:`sweep`: an entry of N
itself is a row of that snapshot, or changed since).  A delete keeps its entry, so no
older image can bring the row back, and no entry is ever lowered.

Every writer records its version through this module:

* the stream (``run``), ``replay`` and ``dlq redrive``: the event's, ``(the generation of
  its place in the topic, its LSN)``, 0 for any snapshot read (:func:`claim`).  A row
  event that cannot be used (dead-lettered: undecodable, unmappable, rejected by the
  target) leaves a *hold* in its place: a change writing no column at ``(generation,
  0)``, so a re-snapshot's sweep keeps a row the source still has (transform.py);
* ``backfill``, all three paths: ``(0, 0)``, the weakest version there is
  (:func:`claim_snapshot_reads`): it fills only rows no change holds;
* ``verify --repair``: ``(the newest completed generation, L)``, L the WAL insert
  position taken before the rows were read, with the transactions older than it waited
  for (verify/from_source.py); a row the source lacks is deleted at that version;
* the cutover's repair and the rollback's restore, from the locked source:
  ``(the newest generation, the WAL insert position)`` (:func:`as_of_now`), newer than
  anything stored can be, so the rule always gives them the row;
* the sweep: ``(N, 0)``, deletes (:func:`sweep`); a source TRUNCATE: its version, deletes,
  and the floor raised to it (:func:`truncate`).

Why a read without an LSN is the weakest version.  Its image holds every change of the
row before its window, but nothing in it says where it stands among the row's later
events, and a version it claimed above 0 could refuse a change it does not hold; applied
in any other way (unconditionally) it overwrites the newer row when it arrives out of
its place: re-driven from the dead-letter topic, replayed ``--into`` a live table, read
from another partition than a truncate.  As the weakest version it fills only rows no
change holds, wherever it is applied.  So it is not how ``verify --repair`` re-syncs a
row: that reads the source itself, at a version that orders it (above).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from replicator.db.schema import TRUNCATED_TABLE

q = sql.SQL


def _behind_floor(table: str, alias: str) -> sql.Composed:
    """True for a change ``alias`` (columns ``gen``, ``lsn``) older than ``table``'s
    truncate floor (the rule, 1).

    The floor is read by an uncorrelated subquery, which PostgreSQL runs once per
    statement (an InitPlan) rather than once per change; in the statement's snapshot
    either way.  No floor (no row) compares as NULL: not behind."""
    return q(
        "COALESCE(({a}.gen, {a}.lsn) < (SELECT f.generation, f.source_lsn"
        " FROM {f} f WHERE f.target_table = {t}), false)"
    ).format(a=sql.Identifier(alias), f=sql.Identifier(TRUNCATED_TABLE), t=sql.Literal(table))


def _claimed(versions: str, table: str, changes: sql.Composable) -> sql.Composed:
    """``INSERT ... RETURNING run_id``, for a CTE: the rule (module docstring) applied to
    ``changes``, a query of ``(run_id, gen, lsn, del)`` with one change per run_id.  The
    run_ids returned are the changes that apply: their entries are written, and stay
    row-locked until commit, so a concurrent claim of the same row waits, then compares
    with the entry this one wrote.  Every claim of a version is this statement."""
    return q(
        "INSERT INTO {v} AS v (run_id, generation, source_lsn, deleted)"
        " SELECT c.run_id, c.gen, c.lsn, c.del FROM ({changes}) AS c(run_id, gen, lsn, del)"
        " WHERE NOT {behind}"
        " ON CONFLICT (run_id) DO UPDATE SET generation = EXCLUDED.generation,"
        " source_lsn = EXCLUDED.source_lsn, deleted = EXCLUDED.deleted"
        " WHERE (EXCLUDED.generation, EXCLUDED.source_lsn) >= (v.generation, v.source_lsn)"
        " RETURNING v.run_id"
    ).format(v=sql.Identifier(versions), changes=changes, behind=_behind_floor(table, "c"))


def claim(versions: str, table: str, stage: sql.Composable) -> str:
    """The sink's claim of the staged changes ``stage`` (:func:`_claimed`; a partial
    change only for a row the target has), then the unclaimed changes dropped from the
    stage and returned as ``(run_id, del, unresolved, behind_floor)``: stale changes,
    changes older than the table's truncate floor (``behind_floor``), and partial changes
    whose target row is missing (``unresolved``)."""
    v, t, s = sql.Identifier(versions), sql.Identifier(table), stage
    changes = q(
        "SELECT s.run_id, s.gen, s.lsn, s.del FROM {s} s"
        " WHERE s.unavail IS NULL OR EXISTS (SELECT FROM {t} t WHERE t.run_id = s.run_id)"
    ).format(s=s, t=t)
    return (
        q(
            "WITH won AS ({won})"
            " DELETE FROM {s} s WHERE NOT EXISTS (SELECT FROM won WHERE won.run_id = s.run_id)"
            " RETURNING s.run_id, s.del, s.unavail IS NOT NULL AND NOT {behind}"
            " AND NOT EXISTS (SELECT FROM {t} t WHERE t.run_id = s.run_id)"
            " AND NOT EXISTS (SELECT FROM {v} v WHERE v.run_id = s.run_id"
            " AND (v.generation, v.source_lsn) > (s.gen, s.lsn)), {behind}"
        )
        .format(
            won=_claimed(versions, table, changes),
            s=s,
            t=t,
            v=v,
            behind=_behind_floor(table, "s"),
        )
        .as_string(None)
    )


def claim_snapshot_reads(versions: str, table: str, ids: sql.Composable) -> sql.Composed:
    """The backfill's claim (:func:`_claimed`): version ``(0, 0)`` for the run_ids of
    ``ids`` (a query of one column), full images; ``INSERT ... RETURNING run_id`` for a
    CTE, the run_ids whose images the statement may write."""
    return _claimed(
        versions,
        table,
        q("SELECT i.i, 0, 0::bigint, false FROM ({ids}) AS i(i)").format(ids=ids),
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
    """A re-snapshot's sweep (generations.py, 4), the rule's delete at ``(%(number)s, 0)``
    inferred from the snapshot: the rows whose entry is of an older generation (strictly
    older: an entry of the generation itself, a hold's included, is a row of its snapshot
    or changed since) are deleted (when ``%(apply_deletes)s``) and their entries recorded
    as deletes at ``(number, 0)``; returns the rows removed."""
    return q(
        "WITH gone AS ("
        " UPDATE {v} v SET generation = %(number)s, source_lsn = 0, deleted = true"
        " WHERE v.generation < %(number)s AND NOT v.deleted RETURNING v.run_id),"
        " removed AS ("
        " DELETE FROM {t} t USING gone WHERE %(apply_deletes)s AND t.run_id = gone.run_id"
        " RETURNING t.run_id)"
        " SELECT count(*) FROM removed"
    ).format(v=sql.Identifier(versions), t=sql.Identifier(table))


def as_of_now(
    conn: psycopg.Connection[Any],
    schema: str,
    versions: str,
    rows: sql.Composable,
    generation: int,
) -> None:
    """Record, in the caller's transaction, the version of rows written from the locked
    source: ``rows`` yields ``(run_id, deleted)``; each gets ``(generation, WAL insert
    position)``.  ``generation``: the newest one recorded for the topic
    (:func:`.generations.latest`).  The rule gives them the row whatever it held: every
    change committed before the lock has a smaller LSN, no stored entry or floor has a
    newer generation, and a change made after the lock has a larger LSN and still
    applies."""
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
