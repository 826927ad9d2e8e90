"""``replicator backfill --defer-indexes``: load without the target's secondary indexes.

Maintaining nine secondary indexes row by row costs more than building them once
afterwards.  Deferring drops the target's non-unique indexes (never the primary key,
which the merge and the stream need) and records their definitions in
``replicator_backfill_indexes`` in the same transaction; they are created again, from
those records, after the last chunk, by this run or by the rerun after an interruption.
Meanwhile ``replicator run`` keeps applying changes (it needs only the primary key), and
while each index is built its writes wait.  ``replicator schema apply`` also recreates
the plan's indexes, should a backfill be abandoned.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from replicator.backfill import chunks as bsql
from replicator.errors import ConfigurationError

_SECONDARY = """
    SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    WHERE x.indrelid = to_regclass(%s) AND NOT x.indisprimary AND NOT x.indisunique
      AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = x.indexrelid)
    ORDER BY i.relname"""


def defer_indexes(conn: psycopg.Connection[Any], table: str) -> int:
    """Drop ``table``'s secondary indexes, recording them first; how many were dropped."""
    indexes = sql.Identifier(bsql.INDEXES_TABLE)
    try:
        with conn.transaction():
            found = conn.execute(_SECONDARY, [f'"{table}"']).fetchall()
            for name, definition in found:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (target_table, index_name, definition) VALUES (%s, %s, %s)"
                        " ON CONFLICT DO NOTHING"
                    ).format(indexes),
                    [table, name, definition],
                )
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigurationError(
            f"--defer-indexes needs to own {table!r} (drop and create its indexes): {exc}"
        ) from exc
    return len(found)


def restore_indexes(conn: psycopg.Connection[Any], table: str) -> int:
    """Create the deferred indexes of ``table`` again, one transaction each; how many."""
    indexes = sql.Identifier(bsql.INDEXES_TABLE)
    deferred = conn.execute(
        sql.SQL(
            "SELECT index_name, definition FROM {} WHERE target_table = %s ORDER BY index_name"
        ).format(indexes),
        [table],
    ).fetchall()
    for name, definition in deferred:
        with conn.transaction():
            conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            (missing,) = conn.execute(
                "SELECT to_regclass(%s) IS NULL", [sql.Identifier(name).as_string(conn)]
            ).fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
            if missing:
                conn.execute(definition)
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE target_table = %s AND index_name = %s").format(
                    indexes
                ),
                [table, name],
            )
    return len(deferred)
