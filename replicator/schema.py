"""Create the source and target tables from ``schemas/``, idempotently."""

from __future__ import annotations

import psycopg

from replicator.errors import ConfigurationError, TargetUnavailable
from replicator.sink import SCHEMAS_DIR, PostgresSink


def apply_source_schema(dsn: str) -> list[str]:
    """The legacy table, only where it is missing (the application owns it)."""
    ddl = (SCHEMAS_DIR / "workflow_processes.sql").read_text()
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            (existed,) = conn.execute(
                "SELECT to_regclass('workflow_processes') IS NOT NULL"
            ).fetchone() or (False,)
            conn.execute(ddl)
    except psycopg.OperationalError as exc:
        raise TargetUnavailable(f"cannot reach the source database: {exc}") from exc
    except psycopg.Error as exc:
        raise ConfigurationError(f"could not create workflow_processes: {exc}") from exc
    return [
        "table workflow_processes already present"
        if existed
        else "created table workflow_processes"
    ]


def apply_target_schema(
    dsn: str, table: str = "workflow_runs", offsets_table: str = "replicator_offsets"
) -> list[str]:
    """``users`` (if missing), the target table with its nine indexes, the replicator's state."""
    with PostgresSink(dsn, table=table, offsets_table=offsets_table) as sink:
        return sink.ensure_schema()
