"""The statements of the sink, composed once per target table (pure: runs nothing).

A batch is staged with one binary COPY into a per-connection temporary table
(``ON COMMIT DELETE ROWS``), then applied with a fixed set of set-based statements:
claim the versions (the order guard, versions.py), delete, upsert full rows, update
partial rows.
"""

from __future__ import annotations

from psycopg import sql

from replicator.mapping.columns import TARGET_COLUMNS, TARGET_TYPES
from replicator.mapping.sql import upsert_tail
from replicator.stream.apply import versions

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

    def __init__(self, table: str, versions_table: str) -> None:
        t, s = sql.Identifier(table), STAGE
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
        self.claim_versions = versions.claim(versions_table, table, s)
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
        self.truncate = versions.truncate(versions_table, table)
        self.empty = versions.empty(versions_table, table)


def _text(statement: sql.Composed) -> str:
    return statement.as_string(None)
