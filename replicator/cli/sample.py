"""``replicator sample``: insert sample legacy rows into the source, as the application would."""

from __future__ import annotations

import argparse

from replicator.cli.common import (
    EXIT_OK,
    Subparsers,
    non_negative_int,
    positive_int,
    settings_from,
    with_env,
)
from replicator.errors import ConfigurationError


def add_parser(sub: Subparsers) -> None:
    p = with_env(sub.add_parser("sample", help="insert sample legacy rows into the source"))
    p.add_argument("--rows", type=positive_int, default=1000, help="rows to insert (default 1000)")
    p.add_argument("--seed", type=int, default=7, help="random seed of the values (default 7)")
    p.add_argument(
        "--start",
        type=non_negative_int,
        default=0,
        help="first row number: ids wp-<start>... (default 0; past existing sample rows)",
    )
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    from replicator.local.sample import insert_rows

    settings = settings_from(args).as_admin()  # it writes legacy rows, as the application would
    if settings.source_dsn is None:
        raise ConfigurationError("source_dsn is not set; set REPLICATOR_SOURCE_DSN")
    count = insert_rows(
        settings.source_dsn.get_secret_value(), args.rows, seed=args.seed, start=args.start
    )
    print(f"inserted {count} sample rows into workflow_processes")
    return EXIT_OK
