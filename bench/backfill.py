"""Backfill rates against the in-database ``INSERT INTO workflow_runs ... SELECT`` baseline.

Uses the PostgreSQL of a running local stack (``replicator stack up``): creates two
scratch databases (source + same-database target, and a separate target), writes the
same sample rows, then times, on fresh target tables with all their indexes:

* baseline: one ``INSERT INTO workflow_runs (...) SELECT <the mapping> FROM
  workflow_processes`` statement, no versions, no chunks (the plan's statement);
* ``replicator backfill`` in the same database (``sql`` path);
* ``replicator backfill`` into the separate database (``copy`` and ``python`` paths);
* both fast paths again with ``--defer-indexes`` (the time includes building the indexes).

Run:  .venv/bin/python bench/backfill.py --rows 200000 [--workers 1,2,3] [--repeat 2]
Prints rows/s and the ratio to the baseline; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replicator.backfill.runner import backfill
from replicator.db.schema import apply_source_schema, apply_target_schema
from replicator.local.sample import insert_rows
from replicator.mapping import sql as mapped_sql
from replicator.mapping.columns import TARGET_COLUMNS
from replicator.settings import Settings, read_env_file


def dsn_of(base: str, db: str) -> str:
    return psycopg.conninfo.make_conninfo(base, dbname=db)


def fresh_table(dsn: str, n: int) -> str:
    name = f"bench_runs_{n}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_versions"')
        conn.execute("DROP TABLE IF EXISTS replicator_backfill_chunks, replicator_backfill_rejects")
        conn.execute("CHECKPOINT")
    apply_target_schema(dsn, name)
    return name


def baseline(dsn: str, table: str) -> float:
    statement = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM workflow_processes p").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, TARGET_COLUMNS)),
        sql.SQL(", ").join(mapped_sql.MAPPED.values()),
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET jit = off")
        started = time.monotonic()
        conn.execute(statement)
        return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--state-dir", default=".replicator/stack")
    args = parser.parse_args()
    env = read_env_file(Path(args.state_dir) / "stack.env")
    admin = dsn_of(env["REPLICATOR_SOURCE_DSN"], "postgres")
    same_db, other_db = f"bench_backfill_{os.getpid()}", f"bench_backfill_{os.getpid()}_t"
    with psycopg.connect(admin, autocommit=True) as conn:
        for db in (same_db, other_db):
            conn.execute(f'CREATE DATABASE "{db}"')
    same, other = dsn_of(admin, same_db), dsn_of(admin, other_db)
    try:
        apply_source_schema(same)
        insert_rows(same, args.rows, prefix="wp-")
        with psycopg.connect(same, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE workflow_processes")
        results: dict[str, list[float]] = {}
        n = 0
        for _ in range(args.repeat):
            n += 1
            table = fresh_table(same, n)
            results.setdefault("baseline INSERT ... SELECT (1 statement)", []).append(
                baseline(same, table)
            )
            configurations = [
                (via, workers, False)
                for workers in map(int, args.workers.split(","))
                for via in ("sql", "copy", "python")
            ] + [("sql", 2, True), ("copy", 2, True)]
            for via, workers, defer in configurations:
                n += 1
                target = same if via == "sql" else other
                table = fresh_table(target, n)
                settings = Settings(
                    source_dsn=same, target_dsn=target, kafka_bootstrap="unused:9092",
                    target_table=table,
                )  # fmt: skip
                report = backfill(
                    settings,
                    workers=workers,
                    chunk_rows=args.chunk_rows,
                    via=via,  # type: ignore[arg-type]
                    check_slot=False,
                    defer=defer,
                )
                assert report.rows_loaded == args.rows, report.summary()
                key = f"backfill --via {via} --workers {workers}" + " --defer-indexes" * defer
                results.setdefault(key, []).append(report.seconds + report.index_seconds)
        base = statistics.median(results["baseline INSERT ... SELECT (1 statement)"])
        print(f"{args.rows:,} rows, chunks of {args.chunk_rows:,}, {os.cpu_count()} cores,"
              f" median of {args.repeat} runs")  # fmt: skip
        print(
            f"{'method':<50} {'seconds':>8} {'rows/s':>9} {'vs baseline':>11} {'best rows/s':>11}"
        )
        for key, times in results.items():
            median = statistics.median(times)
            rate = args.rows / median
            best = args.rows / min(times)
            print(f"{key:<50} {median:8.2f} {rate:9,.0f} {base / median:10.0%} {best:11,.0f}")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for db in (same_db, other_db):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
