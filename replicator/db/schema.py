"""The DDL: where the SQL files are found, and creating what is missing, idempotently.

The SQL files in ``schemas/`` are the source of truth for both databases.  Templates
name the target's tables with ``{table}``, ``{offsets}``, ``{versions}`` and
``{index_prefix}<suffix>``; :func:`render_ddl` replaces them by quoted identifiers.
Functions that create target objects take a connection (the sink's, in its transaction)
so that the sink and the DDL never import each other.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import psycopg
from psycopg import sql

from replicator.db.connect import connect, first_line, mapped_errors
from replicator.db.names import MAX_IDENTIFIER_BYTES, too_long
from replicator.errors import ConfigurationError
from replicator.mapping.columns import PLAN_COST, CostColumn
from replicator.resources import schemas_dir

#: Source tables: the legacy table (only where it is missing: the application owns it) and
#: Debezium's signal table (``replicator verify --repair`` writes snapshot signals there).
SOURCE_TABLES = (
    ("workflow_processes", "workflow_processes.sql"),
    ("debezium_signal", "debezium_signal.sql"),
    ("debezium_heartbeat", "debezium_heartbeat.sql"),
)
#: The dead letters ``replicator dlq redrive`` applied, per target table.
REDRIVEN_TABLE = "replicator_redriven"
#: The truncate floors of the target tables (stream/apply/truncation.py).
TRUNCATED_TABLE = "replicator_truncated"
#: The snapshot generations of each topic, and the sweeps that ended them per target table.
GENERATION_TABLES = ("replicator_generations", "replicator_swept")
_PLACEHOLDER = re.compile(r"\{(table|offsets|versions|index_prefix)\}(\w*)")
_EXISTING = """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relname = ANY(%s)"""
_INDEXES_OF = """
    SELECT i.relname FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = i.relnamespace
    WHERE n.nspname = current_schema() AND i.relname = ANY(%s) AND t.relname = %s"""


@functools.cache
def read_sql(name: str) -> str:
    """The text of ``schemas/<name>``."""
    try:
        return (schemas_dir() / name).read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the SQL file {name}: {exc}") from exc


def index_names(table: str) -> list[str]:
    """``idx_<table>_status`` ... : the nine indexes of the target DDL, for ``table``."""
    suffixes = re.findall(
        r"CREATE INDEX IF NOT EXISTS \{index_prefix\}(\w+)", read_sql("workflow_runs.sql")
    )
    return [f"idx_{table}{suffix}" for suffix in suffixes]


def check_target_names(table: str, offsets_table: str, versions_table: str) -> list[str]:
    """The index names of ``table``; a name PostgreSQL would truncate raises."""
    indexes = index_names(table)
    bad = too_long([table, offsets_table, versions_table, *indexes])
    if bad or any("\x00" in n for n in (table, offsets_table, versions_table)):
        raise ConfigurationError(
            f"table name {table!r}: {bad or [table]} must be 1 to {MAX_IDENTIFIER_BYTES} bytes"
            " without NUL (index names are idx_<table>_<column>)"
        )
    return indexes


def render_ddl(template: str, identifiers: dict[str, str]) -> sql.Composed:
    """A DDL template with ``{table}``, ``{offsets}``, ``{versions}`` and
    ``{index_prefix}<suffix>`` replaced by quoted identifiers (other braces are SQL)."""
    parts: list[sql.Composable] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        name, suffix = match.groups()
        if name not in identifiers:
            continue
        parts.append(sql.SQL(template[pos : match.start()]))
        if name == "index_prefix":
            parts.append(sql.Identifier(identifiers[name] + suffix))
        else:
            parts.extend([sql.Identifier(identifiers[name]), sql.SQL(suffix)])
        pos = match.end()
    parts.append(sql.SQL(template[pos:]))
    return sql.Composed(parts)


def ensure_target(
    conn: psycopg.Connection[Any], table: str, offsets_table: str, versions_table: str
) -> list[str]:
    """Create what is missing (users, ``table`` + indexes, positions, versions) inside the
    caller's transaction; one line per object.  When everything exists no DDL runs: a
    DML-only role (schemas/roles.sql) may not run it."""
    indexes = check_target_names(table, offsets_table, versions_table)
    objects = [
        ("table", "users"),
        ("table", table),
        *(("index", name) for name in indexes),
        ("table", offsets_table),
        ("table", versions_table),
        ("table", REDRIVEN_TABLE),
        ("table", TRUNCATED_TABLE),
        *(("table", name) for name in GENERATION_TABLES),
    ]
    names = [name for _, name in objects]
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('replicator.ensure_schema'))")
    before = {r[0] for r in conn.execute(_EXISTING, [names])}
    if (
        not before >= set(names)
        or not _has_column(conn, offsets_table, "topic_id")
        or not _has_column(conn, versions_table, "generation")
    ):
        templates = [
            ("users.sql", {}),
            ("workflow_runs.sql", {"table": table, "index_prefix": f"idx_{table}"}),
            ("replicator_state.sql", {"offsets": offsets_table, "versions": versions_table}),
        ]
        for template, identifiers in templates:
            ddl = render_ddl(read_sql(template), identifiers)
            conn.execute(ddl, prepare=False)  # several statements: simple protocol
    owned = {r[0] for r in conn.execute(_INDEXES_OF, [indexes, table])}
    foreign = sorted(set(indexes) - owned)
    if foreign:
        raise ConfigurationError(
            f"index names {foreign} already belong to another table; "
            f"rename them or choose another name than {table!r}"
        )
    return [
        f"{kind} {name} already present" if name in before else f"created {kind} {name}"
        for kind, name in objects
    ]


def _has_column(conn: psycopg.Connection[Any], table: str, column: str) -> bool:
    """``table`` has ``column`` (a table created by an older version may lack it)."""
    return (
        conn.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s)"
            " AND attname = %s AND NOT attisdropped",
            [sql.Identifier(table).as_string(None), column],
        ).fetchone()
        is not None
    )


def cost_column(conn: psycopg.Connection[Any], table: str) -> CostColumn:
    """The actual type of ``table.total_cost`` (an operator may have widened it)."""
    row = conn.execute(
        "SELECT numeric_precision, numeric_scale FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s AND column_name = 'total_cost'",
        [table],
    ).fetchone()
    if row is None:
        raise ConfigurationError(f"{table!r} has no total_cost column")
    precision, scale = row
    return CostColumn(precision, scale if scale is not None else PLAN_COST.scale)


def apply_target_schema(
    dsn: str, table: str = "workflow_runs", offsets_table: str = "replicator_offsets"
) -> list[str]:
    """``users`` (if missing), the target table with its nine indexes, the replicator's state."""
    with (
        connect(dsn, "the target database", autocommit=False) as conn,
        mapped_errors(f"create the schema of {table!r}"),
        conn.transaction(),
    ):
        return ensure_target(conn, table, offsets_table, f"{table}_versions")


def relkind(conn: psycopg.Connection[Any], table: str) -> str | None:
    """``r`` table, ``v`` view, ... of ``table`` in the search path (None: absent)."""
    row = conn.execute(
        "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)", [table]
    ).fetchone()
    return None if row is None else str(row[0])


def apply_source_schema(dsn: str) -> list[str]:
    """The source tables, each only where it is missing."""
    lines = []
    with connect(dsn, "the source database") as conn:
        for table, file in SOURCE_TABLES:
            with mapped_errors(f"create {table}"):
                kind = relkind(conn, table)
                if kind is None:  # a role that may not create it is not blamed for it
                    conn.execute(read_sql(file), prepare=False)
            lines.append(
                f"created table {table}"
                if kind is None
                else f"{table} is the cutover's compatibility view: left as it is"
                if kind == "v"
                else f"table {table} already present"
            )
    return lines


def grant_to_service_role(
    dsn: str,
    role: str,
    table: str = "workflow_runs",
    offsets_table: str = "replicator_offsets",
) -> list[str]:
    """What ``replicator run`` needs on a target table, granted to ``role``: DML on the
    table, its versions table and the positions table; reading the snapshot generations
    and recording their sweeps; nothing else.  schemas/roles.sql does the same for the
    default names; this is for other target tables."""
    tables = [table, f"{table}_versions", offsets_table, TRUNCATED_TABLE]
    dml = sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
        sql.SQL(", ").join(map(sql.Identifier, tables)), sql.Identifier(role)
    )
    shared = sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(
        sql.SQL(", ").join(map(sql.Identifier, GENERATION_TABLES)), sql.Identifier(role)
    )
    with connect(dsn, "the target database") as conn, mapped_errors(f"grant {role} DML"):
        conn.execute(dml)
        conn.execute(shared)
    return [
        f"granted {role} SELECT, INSERT, UPDATE, DELETE on {', '.join(tables)}",
        f"granted {role} SELECT, INSERT, UPDATE on {', '.join(GENERATION_TABLES)}",
    ]


def roles_script(part: str) -> str:
    """schemas/roles.sql, or one database's part of it: ``source`` (the roles and the
    grants up to ``-- [target]``) or ``target`` (the roles and the grants after it)."""
    text = read_sql("roles.sql")
    if part == "all":
        return text
    head, rest = text.split("-- [source]", 1)
    source, target = rest.split("-- [target]", 1)
    return head + (source if part == "source" else target)


def apply_roles(source_dsn: str, target_dsn: str) -> list[str]:
    """Run schemas/roles.sql (as the tables' owner): in one database when source and target
    are the same, else each database's part in it.

    After a cutover (``workflow_processes`` is the compatibility view) the source part,
    the stream's grants and publication, is not run again: nothing streams from a view,
    and after the finalize the publication is gone for good (a rollback restores the
    stream with what the cutover kept)."""
    same = psycopg.conninfo.conninfo_to_dict(source_dsn) == psycopg.conninfo.conninfo_to_dict(
        target_dsn
    )
    with connect(source_dsn, "the source database") as conn, mapped_errors("read the source"):
        cut_over = relkind(conn, "workflow_processes") == "v"
    if same:
        parts = [(source_dsn, "target" if cut_over else "all")]
    else:
        parts = [] if cut_over else [(source_dsn, "source")]
        parts.append((target_dsn, "target"))
    for dsn, part in parts:
        with connect(dsn, "the database") as conn, mapped_errors(f"run schemas/roles.sql ({part})"):
            conn.execute(roles_script(part), prepare=False)
    lines = ["roles replicator_debezium and replicator_app granted (schemas/roles.sql)"]
    if cut_over:
        lines.append(
            "the stream's grants and publication not set up: workflow_processes is the"
            " cutover's view (schemas/roles.sql's source part is for a table that streams)"
        )
    return lines


def create_backfill_state(conn: psycopg.Connection[Any], tables: list[str]) -> None:
    """The backfill's state tables (``schemas/backfill_state.sql``) when one is missing."""
    (missing,) = conn.execute(
        "SELECT bool_or(to_regclass(t) IS NULL) FROM unnest(%s::text[]) t", [tables]
    ).fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
    if not missing:
        return
    try:
        conn.execute(read_sql("backfill_state.sql"))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigurationError(
            f"cannot create the backfill's state tables ({first_line(exc)}): run the backfill"
            " as the tables' owner (REPLICATOR_ADMIN_TARGET_DSN), or run"
            f" {schemas_dir() / 'backfill_state.sql'} as the owner and grant SELECT, INSERT,"
            f" UPDATE, DELETE on {', '.join(tables)}"
        ) from exc
