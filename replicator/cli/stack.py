"""``replicator stack up|down|status|destroy``: the local stack."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from replicator.cli.common import EXIT_FAILED, EXIT_OK, Subparsers


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
