"""The ``replicator`` command line: parse, build settings, call one function.

Each command group lives in its own module with its part of the parser
(``add_parser``); this module composes them and maps the package's errors to exit codes.
"""

from __future__ import annotations

import argparse
import sys

import psycopg

from replicator import __version__
from replicator.cli import (
    assess,
    backfill,
    config,
    connector,
    cutover,
    dlq,
    replay,
    run,
    sample,
    schema,
    stack,
    verify,
)
from replicator.cli.common import EXIT_CONFIG, EXIT_FAILED
from replicator.db.connect import classify
from replicator.errors import ConfigurationError, ReplicatorError, TransientError

#: In the order ``replicator --help`` lists them.
COMMANDS = (
    stack,
    schema,
    connector,
    run,
    config,
    backfill,
    verify,
    replay,
    dlq,
    assess,
    cutover,
    sample,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replicator",
        description="Replicate workflow_processes into workflow_runs from Debezium change events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        try:
            return int(args.func(args))
        except psycopg.Error as exc:  # a database error no module expected: still one line
            raise classify(exc, f"run {args.command}") from exc
    except ConfigurationError as exc:
        print(f"replicator: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except TransientError as exc:
        print(f"replicator: unavailable: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ReplicatorError as exc:
        print(f"replicator: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
