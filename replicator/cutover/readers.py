"""Phase 3 on its own: the compatibility view under another name, read-only, while the
legacy table keeps the writes; teams move and compare their reads on it.

Read-only for every role, the tables' owner included: an INSTEAD OF trigger refuses each
write (a view of renamed columns would otherwise let an INSERT through to
``workflow_runs``, where the stream and a later cutover would meet a row the source
never had).  The name must be new, or this view's own (run again): it never shadows a
system catalog or another relation.  ``--drop-readers-view`` removes it (it blocks
``ALTER TABLE workflow_runs ALTER COLUMN ...`` while it exists).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from replicator.cutover import catalog
from replicator.cutover.legacy import view_select
from replicator.cutover.readiness import ARCHIVE
from replicator.db.connect import connect, mapped_errors
from replicator.db.names import plain_identifier
from replicator.errors import ConfigurationError
from replicator.mapping.columns import SOURCE_TABLE
from replicator.settings import Settings

q = sql.SQL
READ_ONLY_FUNCTION = "replicator_readers_read_only"
READ_ONLY_TRIGGER = "replicator_readers_read_only"


def create(settings: Settings, name: str) -> int:
    """The readers' view ``name``; SELECT granted to every role that may read the legacy
    table.  The number of grants."""
    with _session(settings, name, "create the readers' view") as (conn, schema):
        if catalog.relkind(conn, SOURCE_TABLE) != "r":
            raise ConfigurationError(f"{SOURCE_TABLE} is not a table: the cutover happened already")
        _check_name(conn, schema, name, settings.target_table)
        shape = [(c.name, c.type) for c in catalog.columns(conn, SOURCE_TABLE)]
        s, v = sql.Identifier(schema), sql.Identifier(name)
        conn.execute(
            q("CREATE OR REPLACE VIEW {s}.{v} AS {select}").format(
                s=s, v=v, select=view_select(shape, schema, settings.target_table)
            )
        )
        message = sql.Literal(
            f"{name} is a read-only view of {settings.target_table} in the legacy shape:"
            f" write {SOURCE_TABLE}"
        )
        conn.execute(
            q(
                "CREATE OR REPLACE FUNCTION {s}.{fn}() RETURNS trigger LANGUAGE plpgsql AS {body}"
            ).format(
                s=s,
                fn=sql.Identifier(READ_ONLY_FUNCTION),
                body=sql.Literal(
                    q("BEGIN RAISE EXCEPTION {m} USING ERRCODE = 'read_only_sql_transaction'; END")
                    .format(m=message)
                    .as_string(None)
                ),
            )
        )
        conn.execute(
            q("DROP TRIGGER IF EXISTS {t} ON {s}.{v}").format(
                t=sql.Identifier(READ_ONLY_TRIGGER), s=s, v=v
            )
        )
        conn.execute(
            q(
                "CREATE TRIGGER {t} INSTEAD OF INSERT OR UPDATE OR DELETE ON {s}.{v}"
                " FOR EACH ROW EXECUTE FUNCTION {s}.{fn}()"
            ).format(
                t=sql.Identifier(READ_ONLY_TRIGGER), s=s, v=v, fn=sql.Identifier(READ_ONLY_FUNCTION)
            )
        )
        grants = catalog.copy_grants(conn, SOURCE_TABLE, name, only="SELECT")
        conn.commit()
    return grants


def drop(settings: Settings, name: str) -> None:
    """Remove the readers' view ``name`` (only a view this command made)."""
    with _session(settings, name, "drop the readers' view") as (conn, schema):
        if not _ours(conn, schema, name):
            raise ConfigurationError(
                f"{name!r} is not a readers' view made by `cutover --readers-view`"
            )
        conn.execute(q("DROP VIEW {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
        conn.commit()


@contextmanager
def _session(
    settings: Settings, name: str, what: str
) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """The owner's connection and the tables' schema, for ``what`` on the view ``name``."""
    plain_identifier(name, "view name")
    dsn = settings.as_admin().target_dsn.get_secret_value()
    with connect(dsn, "the database", autocommit=False) as conn, mapped_errors(what):
        yield conn, catalog.schema_of(conn, SOURCE_TABLE)


def _ours(conn: psycopg.Connection[Any], schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind = 'v' AND tg.tgname = %s",
        [schema, name, READ_ONLY_TRIGGER],
    ).fetchone()
    return row is not None


def _check_name(conn: psycopg.Connection[Any], schema: str, name: str, target: str) -> None:
    """Refuse a name of the migration's own tables, of a system catalog, or of another
    relation (a readers' view made before may be made again)."""
    if name in (SOURCE_TABLE, ARCHIVE, target) or name.startswith("pg_"):
        raise ConfigurationError(f"{name!r} is taken: choose another name for the readers' view")
    taken = conn.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = %s AND n.nspname IN (%s, 'pg_catalog', 'information_schema')",
        [name, schema],
    ).fetchone()
    if taken is not None and not _ours(conn, schema, name):
        raise ConfigurationError(
            f"{name!r} is taken by a relation in {taken[0]}: choose another name for the"
            " readers' view"
        )
