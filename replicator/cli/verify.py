"""``replicator verify``: compare the source (mapped) with the target; repair drift."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from replicator.cli.common import (
    EXIT_FAILED,
    Subparsers,
    non_negative_int,
    non_negative_seconds,
    positive_int,
    settings_from,
    with_env,
)
from replicator.errors import ConfigurationError, Refused, ReplicatorError
from replicator.settings import Settings


def add_parser(sub: Subparsers) -> None:
    p = with_env(
        sub.add_parser(
            "verify",
            help="compare workflow_processes (mapped) with the target table; exit 0 in sync,"
            " 1 drift found (or, after a cutover, its slot or connector still there), 2 could"
            " not verify",
        )
    )
    p.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    p.add_argument(
        "--repair",
        action="store_true",
        help="re-sync the drifted rows from the source (extra rows deleted), at a version"
        " taken before reading them; verify again",
    )
    p.add_argument(
        "--chunk-rows", type=positive_int, default=10_000, help="rows per checksum chunk"
    )
    p.add_argument(
        "--max-report",
        type=non_negative_int,
        default=20,
        help="ids listed per kind of difference (default 20)",
    )
    p.add_argument(
        "--target-table",
        help="table to compare (default: workflow_runs or REPLICATOR_TARGET_TABLE)",
    )
    p.add_argument(
        "--catch-up-timeout",
        type=non_negative_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long differences wait for the replicator to catch up before they count"
        " (0: compare as is, for a copy nothing streams into)",
    )
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from replicator.observe import logs
    from replicator.observe.progress import Progress
    from replicator.verify.report import EXIT_UNVERIFIED, show
    from replicator.verify.runner import Options, verify

    settings = settings_from(args, target_table=args.target_table)
    logs.configure(settings.log_format, "WARNING")
    options = Options(chunk_rows=args.chunk_rows, catch_up_timeout_s=args.catch_up_timeout)
    try:
        report = verify(settings, options=options, repair_drift=args.repair, meter=Progress())
    except (ConfigurationError, Refused):
        raise
    except ReplicatorError as exc:
        print(f"replicator: could not verify: {exc}", file=sys.stderr)
        return EXIT_UNVERIFIED
    show(report, as_json=args.json, max_report=args.max_report)
    if report.cut_over and _left_by_cutover(settings, sys.stderr if args.json else sys.stdout):
        return max(report.exit_code, EXIT_FAILED)
    return report.exit_code


def _left_by_cutover(settings: Settings, out: TextIO) -> bool:
    """After a cutover: whether its connector, slot or publication is still there (said on
    ``out``): a slot left behind retains WAL until `replicator cutover` runs again."""
    from replicator.cutover import leftovers
    from replicator.cutover.guard import closed_by

    record = closed_by(settings.target_dsn.get_secret_value())
    left = leftovers.found(settings, record) if record is not None else []
    if left:
        print(leftovers.summary(left), file=out)
    return bool(left)
