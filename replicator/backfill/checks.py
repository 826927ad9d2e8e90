"""What ``replicator backfill`` checks before it loads anything (see
:mod:`replicator.backfill.runner`): the source table and its column types, the replication
slot that makes the backfill safe, the target tables, and whether source and target
are one database (then each chunk is loaded inside it).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg import sql

from replicator.backfill import chunks as bsql
from replicator.db.schema import create_backfill_state
from replicator.errors import ConfigurationError
from replicator.mapping.columns import SOURCE_TABLE, SOURCE_TYPES

log = logging.getLogger("replicator.backfill")


Identity = tuple[str, int, str | None, str]


def identity(conn: psycopg.Connection[Any]) -> Identity:
    """(database, port, the cluster's system identifier or None, host as in the DSN)."""
    row = conn.execute(
        "SELECT current_database(), coalesce(inet_server_port(), current_setting('port')::int)"
    ).fetchone()
    try:
        sysid = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
    except psycopg.errors.InsufficientPrivilege:
        sysid = None
    return (row[0], int(row[1]), sysid[0] if sysid else None, conn.info.host)  # type: ignore[index]  # function calls: always one row


def same_database(a: Identity, b: Identity) -> bool:
    """True when both connections reach one database of one cluster (pure).

    The cluster's system identifier decides; when a role may not read it, the host as
    written in the DSN must match too (a false "no" only costs the faster path)."""
    name_a, port_a, sys_a, host_a = a
    name_b, port_b, sys_b, host_b = b
    if (name_a, port_a) != (name_b, port_b):
        return False
    if sys_a is not None and sys_b is not None:
        return sys_a == sys_b
    return host_a == host_b


def check_source(conn: psycopg.Connection[Any]) -> sql.Composable:
    """The source table, schema-qualified, after checking its columns' types."""
    found = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = to_regclass(%s)",
        [SOURCE_TABLE],
    ).fetchone()
    if found is None:
        raise ConfigurationError(f"the source database has no table {SOURCE_TABLE}")
    types = dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            [SOURCE_TABLE],
        ).fetchall()
    )
    wrong = {c: types.get(c) for c, t in SOURCE_TYPES.items() if types.get(c) != t}
    if wrong:
        raise ConfigurationError(
            f"{SOURCE_TABLE} does not have the expected column types: "
            + ", ".join(
                f"{c} is {t or 'missing'}, expected {SOURCE_TYPES[c]}" for c, t in wrong.items()
            )
        )
    return sql.Identifier(*found)


def require_slot(conn: psycopg.Connection[Any]) -> None:
    try:
        slots = conn.execute(
            "SELECT slot_name FROM pg_replication_slots"
            " WHERE slot_type = 'logical' AND database = current_database()"
        ).fetchall()
    except psycopg.errors.InsufficientPrivilege:
        log.warning("cannot read pg_replication_slots; make sure the connector streams already")
        return
    if not slots:
        raise ConfigurationError(
            "the source database has no logical replication slot: register the connector first"
            " (replicator connector apply --snapshot-mode no_data) so that every change made"
            " during the backfill is streamed, or pass --no-slot-check for a copy without"
            " streaming"
        )


def create_state_tables(conn: psycopg.Connection[Any]) -> None:
    create_backfill_state(conn, [bsql.CHUNKS_TABLE, bsql.REJECTS_TABLE, bsql.INDEXES_TABLE])


def check_target(conn: psycopg.Connection[Any], table: str, versions: str) -> None:
    for name in (table, versions):
        (exists,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{name}"']).fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
        if not exists:
            raise ConfigurationError(
                f"the target database has no table {name!r}; create it first"
                " (replicator schema apply)"
            )
