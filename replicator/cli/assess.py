"""``replicator assess``: the migration plan's success criteria, measured."""

from __future__ import annotations

import argparse
import json

from replicator.cli.common import Subparsers, positive_int, settings_from, with_env


def add_parser(sub: Subparsers) -> None:
    p = with_env(
        sub.add_parser(
            "assess",
            help="measure the plan's success criteria on the live tables (query time,"
            " storage, zero data loss); exit 0 all pass, 1 one fails, 2 could not measure",
        )
    )
    p.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    p.add_argument(
        "--runs", type=positive_int, default=7, help="timed runs of each query (median; default 7)"
    )
    p.set_defaults(func=cmd_assess)


def cmd_assess(args: argparse.Namespace) -> int:
    from replicator.assess.runner import assess

    result = assess(settings_from(args), runs=args.runs)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
        return result.exit_code
    if result.error is not None:
        print(f"replicator: could not assess: {result.error}")
        return result.exit_code
    assert result.source is not None and result.target is not None
    legacy = result.legacy_table
    print("replication" if result.cut_over is None else "the migrated state")
    print(f"  rows                {legacy:<26} {result.source.rows:,}")
    print(f"                      {'workflow_runs':<26} {result.target.rows:,}")
    print(f"  verify              {result.verify_status.replace('_', ' ')}")
    if result.cut_over is not None:
        print(f"  written since       {_n(result.changed_since_cutover)} rows (not compared)")
        print(f"  stream              closed: {result.cut_over}")
    else:
        print(f"  consumer lag        {_n(result.consumer_lag)} events")
        print(f"  slot retains        {_n(result.slot_retained_bytes)} bytes of WAL")
    print("queries (median ms; * = served by an index)")
    print(f"  {'':<30}{legacy:>26}{'workflow_runs':>16}")
    for name, (old, new) in result.queries.items():
        was = "n/a" if old is None else f"{old.median_ms:.2f}{'*' if old.index_used else ' '}"
        print(f"  {name:<30}{was:>26}{new.median_ms:>15.2f}{'*' if new.index_used else ' '}")
    print(
        f"{'storage (bytes)':<28}{'heap':>12}{'indexes':>14}{'toast':>14}{'total':>14}"
        f"{'per row':>12}"
    )
    for side, s in ((legacy, result.source), ("workflow_runs", result.target)):
        per_row = f"{s.bytes_per_row:,.0f}" if s.bytes_per_row else "-"
        print(
            f"  {side:<26}{s.heap_bytes:>12,}{s.index_bytes:>14,}{s.toast_bytes:>14,}"
            f"{s.total_bytes:>14,}{per_row:>12}"
        )
    print("the plan's success criteria")
    for c in result.criteria:
        mark = "n/a " if c.passed is None else "PASS" if c.passed else "FAIL"
        print(f"  {mark}  {c.name}: {c.figure}")
    return result.exit_code


def _n(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"
