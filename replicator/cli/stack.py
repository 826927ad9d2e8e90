"""``replicator stack up|down|status|destroy`` and ``replicator sample``: the local stack
and its sample rows, the only commands that use ``replicator/local/``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from replicator.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    non_negative_int,
    positive_int,
    settings_from,
    with_env,
)
from replicator.errors import ConfigurationError


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "stack",
        help="the local stack: PostgreSQL, broker, Kafka Connect",
        description="up: start what is not running (PostgreSQL, the broker, Kafka Connect with"
        " Debezium), create the tables and roles, register the connector, write stack.env;"
        " down: stop exactly the processes up started; status: each part's health (exit 1"
        " unless all are healthy); destroy: down, then delete the state folder.",
    )
    p.add_argument("action", choices=["up", "down", "status", "destroy"])
    p.add_argument("--state-dir", help="state folder (default .replicator/stack)")
    p.add_argument(
        "--separate-target",
        action="store_true",
        help="put workflow_runs in its own database (at first 'up' only)",
    )
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.set_defaults(func=cmd_stack)


def _stack_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or os.environ.get("REPLICATOR_STACK_DIR", ".replicator/stack"))


def cmd_stack(args: argparse.Namespace) -> int:
    # imported here: no production command loads the development stack's modules
    from replicator.local.stack import LocalStack

    stack = LocalStack(_stack_dir(args), separate_target=args.separate_target)
    if args.action == "up":
        settings = stack.up()
        for key, value in settings.items():
            print(f"{key}={value}")
        print(f"# written to {stack.env_file}", file=sys.stderr)
        return EXIT_OK
    if args.action == "down":
        for line in stack.down():
            print(f"stopped {line}")
        return EXIT_OK
    if args.action == "destroy":
        stack.destroy()
        print(f"removed {stack.state_dir}")
        return EXIT_OK
    status = stack.status()
    healthy = all(bool(part.get("healthy")) for part in status.values())
    if args.json:
        print(json.dumps({"healthy": healthy, "parts": status}, indent=2))
    else:
        for name, part in status.items():
            mark = "ok  " if part.get("healthy") else "DOWN"
            detail = ", ".join(f"{k}={v}" for k, v in part.items() if k != "healthy")
            print(f"{mark} {name:<14} {detail}")
    return EXIT_OK if healthy else EXIT_FAILED


def add_sample_parser(sub: Subparsers) -> None:
    """``replicator sample``: insert sample legacy rows into the source, as the application
    would (a tool of the local stack)."""
    p = with_env(sub.add_parser("sample", help="insert sample legacy rows into the source"))
    p.add_argument("--rows", type=positive_int, default=1000, help="rows to insert (default 1000)")
    p.add_argument("--seed", type=int, default=7, help="random seed of the values (default 7)")
    p.add_argument(
        "--start",
        type=non_negative_int,
        help="first row number: ids wp-<start>... (default: past the existing sample rows,"
        " 0 in an empty table)",
    )
    p.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    from replicator.local.sample import insert_rows

    # it writes legacy rows, as the application would
    settings = settings_from(args, local=True).as_admin()
    if settings.source_dsn is None:
        raise ConfigurationError("source_dsn is not set; set REPLICATOR_SOURCE_DSN")
    count = insert_rows(
        settings.source_dsn.get_secret_value(), args.rows, seed=args.seed, start=args.start
    )
    print(f"inserted {count} sample rows into workflow_processes")
    return EXIT_OK
