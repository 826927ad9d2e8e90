"""Create the source and target tables from ``schemas/``, idempotently."""

from __future__ import annotations

import psycopg

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
