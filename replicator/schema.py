"""Create the source and target tables from ``schemas/``, idempotently."""

from __future__ import annotations

import psycopg
from psycopg import sql

from replicator.errors import ConfigurationError, TargetUnavailable
from replicator.sink import SCHEMAS_DIR, PostgresSink

#: Source tables: the legacy table (only where it is missing: the application owns it) and
#: Debezium's signal table (``replicator verify --repair`` writes snapshot signals there).
SOURCE_TABLES = (
    ("workflow_processes", "workflow_processes.sql"),
    ("debezium_signal", "debezium_signal.sql"),
)


def apply_source_schema(dsn: str) -> list[str]:
    """The source tables, each only where it is missing."""
    lines = []
    for table, file in SOURCE_TABLES:
        ddl = (SCHEMAS_DIR / file).read_text()
        try:
            with psycopg.connect(dsn, connect_timeout=10) as conn:
                (existed,) = conn.execute(
                    "SELECT to_regclass(%s) IS NOT NULL", [table]
                ).fetchone() or (False,)
                conn.execute(ddl)
        except psycopg.OperationalError as exc:
            raise TargetUnavailable(f"cannot reach the source database: {exc}") from exc
        except psycopg.Error as exc:
            raise ConfigurationError(f"could not create {table}: {exc}") from exc
        lines.append(f"table {table} already present" if existed else f"created table {table}")
    return lines


def apply_target_schema(
    dsn: str, table: str = "workflow_runs", offsets_table: str = "replicator_offsets"
) -> list[str]:
    """``users`` (if missing), the target table with its nine indexes, the replicator's state."""
    with PostgresSink(dsn, table=table, offsets_table=offsets_table) as sink:
        return sink.ensure_schema()


def grant_to_service_role(
    dsn: str,
    role: str,
    table: str = "workflow_runs",
    offsets_table: str = "replicator_offsets",
) -> list[str]:
    """What ``replicator run`` needs on a target table, granted to ``role``: DML on the
    table, its versions table and the positions table, nothing else.  schemas/roles.sql
    does the same for the default names; this is for other target tables."""
    tables = [table, f"{table}_versions", offsets_table]
    statement = sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
        sql.SQL(", ").join(map(sql.Identifier, tables)), sql.Identifier(role)
    )
    try:
        with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
            conn.execute(statement)
    except psycopg.OperationalError as exc:
        raise TargetUnavailable(f"cannot reach the target database: {exc}") from exc
    except psycopg.Error as exc:
        raise ConfigurationError(f"could not grant {role} DML on {tables}: {exc}") from exc
    return [f"granted {role} SELECT, INSERT, UPDATE, DELETE on {', '.join(tables)}"]


def roles_script(part: str) -> str:
    """schemas/roles.sql, or one database's part of it: ``source`` (the roles and the
    grants up to ``-- [target]``) or ``target`` (the roles and the grants after it)."""
    text = (SCHEMAS_DIR / "roles.sql").read_text()
    if part == "all":
        return text
    head, rest = text.split("-- [source]", 1)
    source, target = rest.split("-- [target]", 1)
    return head + (source if part == "source" else target)


def apply_roles(source_dsn: str, target_dsn: str) -> list[str]:
    """Run schemas/roles.sql (as the tables' owner): in one database when source and target
    are the same, else each database's part in it."""
    same = psycopg.conninfo.conninfo_to_dict(source_dsn) == psycopg.conninfo.conninfo_to_dict(
        target_dsn
    )
    parts = [(source_dsn, "all")] if same else [(source_dsn, "source"), (target_dsn, "target")]
    for dsn, part in parts:
        try:
            with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
                conn.execute(roles_script(part), prepare=False)
        except psycopg.OperationalError as exc:
            raise TargetUnavailable(f"cannot reach the database: {exc}") from exc
        except psycopg.Error as exc:
            raise ConfigurationError(f"schemas/roles.sql failed ({part}): {exc}") from exc
    return ["roles replicator_debezium and replicator_app granted (schemas/roles.sql)"]
