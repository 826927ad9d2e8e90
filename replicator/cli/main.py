"""The ``replicator`` command line: parse, build settings, call one function.

Each command group lives in its own module with its part of the parser
(``add_parser``); this module composes them and maps the package's errors to exit codes.
"""

from __future__ import annotations

import argparse
import os
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
    schema,
    stack,
    verify,
)
from replicator.cli.common import EXIT_CONFIG, EXIT_FAILED, EXIT_REFUSED, EXIT_SIGPIPE
from replicator.db.connect import classify
from replicator.errors import ConfigurationError, Refused, ReplicatorError, TransientError

#: Each command's parser, in the order ``replicator --help`` lists them.
COMMANDS = (
    stack.add_parser,
    schema.add_parser,
    connector.add_parser,
    run.add_parser,
    config.add_parser,
    backfill.add_parser,
    verify.add_parser,
    replay.add_parser,
    dlq.add_parser,
    assess.add_parser,
    cutover.add_parser,
    stack.add_sample_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replicator",
        description="Replicate workflow_processes into workflow_runs from Debezium change events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser in COMMANDS:
        add_parser(sub)
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
    except Refused as exc:  # valid, but the state forbids it: 3, told apart from bad input
        print(f"replicator: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except TransientError as exc:
        # one rule for every command: 2 when it could not do its work (bad input, a
        # configuration, a part it needs out of reach), 1 when it did and the answer is no
        print(f"replicator: unavailable: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ReplicatorError as exc:
        print(f"replicator: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as a command killed by SIGPIPE
        # does, and keep the interpreter from failing again when it flushes stdout
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
