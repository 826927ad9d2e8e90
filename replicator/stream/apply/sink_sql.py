"""The statements of the sink, composed once per target table (pure: runs nothing).

A batch is staged with one binary COPY into a per-connection temporary table
(``ON COMMIT DELETE ROWS``), then applied with a fixed set of set-based statements:
claim the versions (the order guard), delete, upsert full rows, update partial rows.
"""

from __future__ import annotations

from psycopg import sql

from replicator.mapping.columns import TARGET_COLUMNS, TARGET_TYPES
from replicator.mapping.sql import upsert_tail

#: Staged as text (json: psycopg's json dumper would re-encode a ``str``) and int8 (int4:
#: psycopg's binary int4 dumper silently wraps values out of range); the casts into the
#: target then check them.
_STAGED = {"json": "text", "int4": "int8"}
COPY_TYPES = ["int4", "int8", "bool", "text[]", *(_STAGED.get(t, t) for t in TARGET_TYPES.values())]
STAGE = sql.Identifier("pg_temp", "replicator_sink_stage")
#: The session's temporary buffers, set before the stage is created (sink.py).
STAGE_BUFFERS = "SET temp_buffers = '64MB'"
q = sql.SQL


def _staged(name: str) -> sql.Composable:
    cast = f"::{TARGET_TYPES[name]}" if TARGET_TYPES[name] in _STAGED else ""
    return q("s.{}" + cast).format(sql.Identifier(name))


class SinkStatements:
    """Every statement the sink runs on its table, as text."""

    def __init__(self, table: str, versions: str) -> None:
        t, v, s = sql.Identifier(table), sql.Identifier(versions), STAGE
        cols = q(", ").join(map(sql.Identifier, TARGET_COLUMNS))
        self.create_stage = _text(
            q(
                "CREATE TEMP TABLE IF NOT EXISTS {s} (gen integer NOT NULL, lsn bigint,"
                " del boolean NOT NULL,"
                " unavail text[], {defs}) ON COMMIT DELETE ROWS"
            ).format(
                s=s,
                defs=q(", ").join(
                    q("{} {}").format(sql.Identifier(n), q(_STAGED.get(ty, ty)))
                    for n, ty in TARGET_TYPES.items()
                ),
            )
        )
        self.copy_stage = _text(
            q("COPY {s} (gen, lsn, del, unavail, {cols}) FROM STDIN (FORMAT BINARY)").format(
                s=s, cols=cols
            )
        )
        # Claim a version for every applicable change (the upsert also row-locks it
        # against a concurrent writer), then drop from the stage what was not claimed:
        # stale changes, and partial changes whose target row is missing (unresolved).
        # Versions compare as (generation, lsn); a change without an LSN (-1) is claimed
        # and leaves the stored version as it was.
        self.claim_versions = _text(
            q(
                "WITH won AS ("
                " INSERT INTO {v} AS v (run_id, generation, source_lsn, deleted)"
                " SELECT s.run_id, s.gen, COALESCE(s.lsn, -1), s.del FROM {s} s"
                " WHERE s.unavail IS NULL OR EXISTS (SELECT FROM {t} t WHERE t.run_id = s.run_id)"
                " ON CONFLICT (run_id) DO UPDATE"
                " SET generation = CASE WHEN EXCLUDED.source_lsn = -1 THEN v.generation"
                " ELSE EXCLUDED.generation END, source_lsn = CASE WHEN EXCLUDED.source_lsn = -1"
                " THEN v.source_lsn ELSE EXCLUDED.source_lsn END,"
                " deleted = EXCLUDED.deleted"
                " WHERE EXCLUDED.source_lsn = -1"
                " OR (EXCLUDED.generation, EXCLUDED.source_lsn) >= (v.generation, v.source_lsn)"
                " RETURNING v.run_id)"
                " DELETE FROM {s} s WHERE NOT EXISTS (SELECT FROM won WHERE won.run_id = s.run_id)"
                " RETURNING s.run_id, s.del, s.unavail IS NOT NULL"
                " AND NOT EXISTS (SELECT FROM {t} t WHERE t.run_id = s.run_id)"
                " AND NOT EXISTS (SELECT FROM {v} v WHERE v.run_id = s.run_id"
                " AND (v.generation, v.source_lsn) > (s.gen, s.lsn))"
            ).format(s=s, t=t, v=v)
        )
        self.delete_rows = _text(
            q("DELETE FROM {t} t USING {s} s WHERE s.del AND t.run_id = s.run_id").format(t=t, s=s)
        )
        self.upsert_full = _text(
            q(
                "INSERT INTO {t} AS t ({cols}) SELECT {vals} FROM {s} s"
                " WHERE NOT s.del AND s.unavail IS NULL {upsert}"
            ).format(
                t=t,
                s=s,
                cols=cols,
                vals=q(", ").join(map(_staged, TARGET_COLUMNS)),
                upsert=upsert_tail(),
            )
        )
        self.update_partial = _text(
            q(
                "UPDATE {t} t SET {sets} FROM {s} s"
                " WHERE s.unavail IS NOT NULL AND NOT s.del AND t.run_id = s.run_id"
            ).format(
                t=t,
                s=s,
                sets=q(", ").join(
                    q("{c} = CASE WHEN {name} = ANY(s.unavail) THEN t.{c} ELSE {val} END").format(
                        c=sql.Identifier(n), name=sql.Literal(n), val=_staged(n)
                    )
                    for n in TARGET_COLUMNS[1:]
                ),
            )
        )
        self.truncate_rows, self.truncate_versions = _truncation(t, v)
        self.empty = _text(q("TRUNCATE {t}, {v}").format(t=t, v=v))


def _truncation(t: sql.Identifier, v: sql.Identifier) -> tuple[str, str]:
    """A source TRUNCATE at version ``(%(g)s, %(l)s)`` (truncation.py): the rows no later
    change wrote go, and their versions become deletes at the truncate's version."""
    newer = q(
        "SELECT FROM {v} v WHERE v.run_id = t.run_id"
        " AND (v.generation, v.source_lsn) > (%(g)s::integer, %(l)s::bigint)"
    ).format(v=v)
    rows = q("DELETE FROM {t} t WHERE NOT EXISTS ({newer})").format(t=t, newer=newer)
    versions = q(
        "UPDATE {v} SET generation = %(g)s, source_lsn = %(l)s, deleted = true"
        " WHERE (generation, source_lsn) < (%(g)s::integer, %(l)s::bigint)"
    ).format(v=v)
    return _text(rows), _text(versions)


def _text(statement: sql.Composed) -> str:
    return statement.as_string(None)
