"""``replicator assess``: the migration plan's success criteria, measured."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from replicator.cli.common import Subparsers, positive_int, settings_from, with_env


def add_parser(sub: Subparsers) -> None:
    p = with_env(
        sub.add_parser(
            "assess",
            help="measure the plan's success criteria on the live tables (query time,"
            " storage, zero data loss), each with its floor, and advice measured on a"
            " scratch copy; read-only on the live tables; exit 0 all pass, 1 one fails,"
            " 2 could not measure",
        )
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="the figures as JSON on stdout (schemas/assess-report.schema.json)",
    )
    p.add_argument(
        "--runs", type=positive_int, default=7, help="timed runs of each question (default 7)"
    )
    p.add_argument(
        "--chart",
        metavar="FILE",
        help="also write the per-question times as an HTML page with an inline SVG chart",
    )
    p.add_argument(
        "--no-scratch",
        action="store_true",
        help="skip the scratch copy of the new table (no floors, no advice): for a table"
        " too large to copy into a temporary table",
    )
    p.set_defaults(func=cmd_assess)


def cmd_assess(args: argparse.Namespace) -> int:
    from replicator.assess.chart import html
    from replicator.assess.render import human
    from replicator.assess.runner import assess

    result = assess(settings_from(args), runs=args.runs, use_scratch=not args.no_scratch)
    if args.chart and result.error is None:
        Path(args.chart).write_text(html(result))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print(human(result))
    return result.exit_code
