"""``replicator backfill``: the initial load straight from the source table."""

from __future__ import annotations

import argparse

from replicator.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    positive_int,
    settings_from,
    with_env,
)


def add_parser(sub: Subparsers) -> None:
    p = with_env(
        sub.add_parser(
            "backfill",
            help="initial load straight from the source table, resumable (register the"
            " connector with --snapshot-mode no_data first)",
        )
    )
    p.add_argument("--workers", type=positive_int, default=2, help="chunks in flight (default 2)")
    p.add_argument(
        "--chunk-rows", type=positive_int, default=50_000, help="rows per chunk (default 50000)"
    )
    p.add_argument(
        "--target-table", help="table to load (default: workflow_runs or REPLICATOR_TARGET_TABLE)"
    )
    p.add_argument("--restart", action="store_true", help="forget finished chunks, plan again")
    p.add_argument(
        "--via",
        choices=["auto", "sql", "copy", "python"],
        default="auto",
        help="sql: in the database (source and target in one database; auto's choice);"
        " copy: COPY into the target, mapped there (auto's choice otherwise);"
        " python: map_to_tuple and the sink's merge",
    )
    p.add_argument(
        "--no-slot-check",
        dest="slot_check",
        action="store_false",
        help="run even without a logical replication slot on the source (nothing streams"
        " the changes made meanwhile)",
    )
    p.add_argument(
        "--defer-indexes",
        action="store_true",
        help="drop the target's secondary indexes while loading, create them after the last"
        " chunk (faster; needs to own the table)",
    )
    p.set_defaults(func=cmd_backfill)


def cmd_backfill(args: argparse.Namespace) -> int:
    from replicator.backfill.runner import backfill
    from replicator.observe.progress import Progress

    settings = settings_from(args, target_table=args.target_table)
    report = backfill(
        settings,
        workers=args.workers,
        chunk_rows=args.chunk_rows,
        restart=args.restart,
        via=args.via,
        check_slot=args.slot_check,
        defer=args.defer_indexes,
        progress=Progress(),
    )
    print("\n".join(report.summary()))
    return EXIT_FAILED if report.rejects_total else EXIT_OK
