"""``replicator_redriven``: the only code that reads or writes it.

One row per dead letter a redrive tried for a target table, keyed by the letter's place
in the dead-letter topic, with its last outcome: ``applied`` or ``stale`` (final, written
in the transaction of the letter's row), ``superseded`` (final: a newer applied change of
its row replaced it, decided before mapping it, superseded.py), ``dismissed`` (final: an
operator fixed it another way, ``dlq dismiss``) or ``failed`` (with the error; tried
again)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from replicator.db.connect import connect, mapped_errors
from replicator.db.schema import REDRIVEN_TABLE
from replicator.errors import ReplicatorError

FINAL = ("applied", "stale", "superseded", "dismissed")  # never tried again
_T = sql.Identifier(REDRIVEN_TABLE)
_OUTCOMES = sql.SQL(
    "SELECT dlq_partition, dlq_offset, outcome FROM {} WHERE target_table = %s AND dlq_topic = %s"
).format(_T)
_RECORD = sql.SQL(
    "INSERT INTO {} AS r (target_table, dlq_topic, dlq_partition, dlq_offset, outcome, error)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (target_table, dlq_topic, dlq_partition,"
    " dlq_offset) DO UPDATE SET outcome = EXCLUDED.outcome, error = EXCLUDED.error,"
    " redriven_at = now() WHERE r.outcome = 'failed'"
).format(_T)
_COUNTS = sql.SQL(
    "SELECT outcome, count(*) FROM {} WHERE target_table = %s GROUP BY outcome"
).format(_T)


def outcomes(conn: psycopg.Connection[Any], table: str, topic: str) -> dict[tuple[int, int], str]:
    """The last outcome of each letter of ``topic`` tried for ``table``, by place."""
    rows = conn.execute(_OUTCOMES, [table, topic]).fetchall()
    return {(p, o): outcome for p, o, outcome in rows}


def record(
    conn: psycopg.Connection[Any],
    table: str,
    topic: str,
    place: tuple[int, int],
    outcome: str,
    error: str | None = None,
) -> None:
    """Record ``outcome`` of the letter at ``place`` (a final outcome is never replaced)."""
    conn.execute(_RECORD, [table, topic, *place, outcome, error])


def counts(dsn: str, table: str) -> dict[str, int]:
    """Letters per outcome for ``table`` ({} when they cannot be read): for /metrics."""
    try:
        with (
            connect(dsn, "the target database", connect_timeout=3) as conn,
            mapped_errors("count the re-driven dead letters"),
        ):
            return dict(conn.execute(_COUNTS, [table]).fetchall())
    except ReplicatorError:
        return {}
