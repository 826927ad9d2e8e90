"""Sample legacy rows for demos, tests and benchmarks (deterministic for a seed)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg

from replicator.db.connect import classify, connect
from replicator.errors import ConfigurationError
from replicator.mapping.columns import SOURCE_COLUMNS, SOURCE_TABLE

WORKFLOWS = ("code-review", "bug-fix", "refactor", "docs", "release", "triage")
STATUSES = ("pending", "running", "completed", "failed", "cancelled", None)


def legacy_row(rng: random.Random, run_id: str) -> tuple[Any, ...]:
    """One ``workflow_processes`` row (values in :data:`SOURCE_COLUMNS` order)."""
    created = datetime(2025, 1, 1) + timedelta(microseconds=rng.randrange(10**14))
    started = created + timedelta(microseconds=rng.randrange(10**9)) if rng.random() < 0.8 else None
    done = (
        started + timedelta(microseconds=rng.randrange(10**10))
        if started and rng.random() < 0.6
        else None
    )
    status = rng.choice(STATUSES)
    return (
        run_id,
        rng.choice(WORKFLOWS),
        f"Task {run_id}: " + "lorem ipsum " * rng.randrange(1, 8),
        rng.choice((10, 20, 30, 50, None)),
        f"session-{rng.randrange(10**6)}" if rng.random() < 0.7 else None,
        f"feature/{rng.randrange(10**4)}" if rng.random() < 0.5 else None,
        f"https://git.example.com/org/repo-{rng.randrange(100)}" if rng.random() < 0.5 else None,
        created,
        created + timedelta(seconds=rng.randrange(10**5)),
        status,
        f"result of {run_id} " * rng.randrange(0, 20) if status == "completed" else None,
        f"error in {run_id}" if status == "failed" else None,
        rng.randrange(10**7) if done else None,
        round(rng.random() * 100, 4) if rng.random() < 0.9 else None,
        started,
        done,
    )


def legacy_rows(
    count: int, *, seed: int = 7, prefix: str = "wp-", start: int = 0
) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    width = max(8, len(str(start + count)))
    for n in range(start, start + count):
        yield legacy_row(rng, f"{prefix}{n:0{width}d}")


def next_start(conn: psycopg.Connection[Any], prefix: str = "wp-") -> int:
    """The row number after the highest sample id (``<prefix><digits>``) the table holds;
    0 when it holds none."""
    pattern = f"^{re.escape(prefix)}([0-9]+)$"
    row = conn.execute(
        f"SELECT max(substring(id FROM %s)::numeric) FROM {SOURCE_TABLE} WHERE id ~ %s",
        [pattern, pattern],
    ).fetchone()
    return 0 if row is None or row[0] is None else int(row[0]) + 1


def insert_rows(
    dsn: str, count: int, *, seed: int = 7, prefix: str = "wp-", start: int | None = 0
) -> int:
    """COPY ``count`` sample rows into ``workflow_processes``; return how many were written.
    ``start`` None: past the sample rows the table holds (:func:`next_start`)."""
    columns = ", ".join(SOURCE_COLUMNS)
    with connect(dsn, "the source database", autocommit=False) as conn:
        try:
            if start is None:
                start = next_start(conn, prefix)
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY {SOURCE_TABLE} ({columns}) FROM STDIN") as copy,
            ):
                for row in legacy_rows(count, seed=seed, prefix=prefix, start=start):
                    copy.write_row(row)
            conn.commit()
        except psycopg.errors.UniqueViolation as exc:
            raise ConfigurationError(
                f"sample rows {prefix}{start}... already exist in {SOURCE_TABLE}; pass --start"
                " with a row number past them"
            ) from exc
        except psycopg.Error as exc:
            raise classify(exc, f"insert sample rows into {SOURCE_TABLE}") from exc
    return count
