"""``replicator replay``: rebuild a table from the topic, optionally swap it in."""

from __future__ import annotations

import argparse

from replicator.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    settings_from,
    tune_for_streaming,
    with_env,
)


def add_parser(sub: Subparsers) -> None:
    p = with_env(
        sub.add_parser(
            "replay",
            help="rebuild a table from the topic (no consumer group), up to where it ends now",
        )
    )
    p.add_argument(
        "--into",
        help="table to rebuild (default <target>_replay, emptied first; the target table"
        " itself is replayed into in place, idempotently)",
    )
    p.add_argument(
        "--swap",
        action="store_true",
        help="verify the rebuilt table, then swap it in for the target table atomically",
    )
    p.add_argument(
        "--drop-old",
        action="store_true",
        help="with --swap: drop the previous table instead of keeping it as <target>_old_<time>",
    )
    p.add_argument(
        "--target-table", help="the live table (default: workflow_runs or REPLICATOR_TARGET_TABLE)"
    )
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from replicator.observe import logs
    from replicator.observe.progress import Progress
    from replicator.replay.runner import replay
    from replicator.verify.report import show

    settings = settings_from(args, target_table=args.target_table)
    logs.configure(settings.log_format, "WARNING")
    tune_for_streaming()
    report = replay(
        settings, into=args.into, swap=args.swap, drop_old=args.drop_old, meter=Progress()
    )
    print("\n".join(report.summary()))
    if report.verify is not None:
        show(report.verify, as_json=False)
        if not report.swapped:
            print(f"not swapped: the replayed table {report.table} is left for inspection")
            return report.verify.exit_code or EXIT_FAILED
    return EXIT_OK
