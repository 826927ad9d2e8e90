"""What every command module of the CLI shares: exit codes, the settings loader and the
``--env-file`` option."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from replicator.settings import Settings, load_settings

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
#: A command whose output pipe was closed (`| head`) ends as one killed by SIGPIPE would.
EXIT_SIGPIPE = 141

Subparsers = Any  # argparse's private _SubParsersAction


def settings_from(args: argparse.Namespace, *, local: bool = False, **overrides: Any) -> Settings:
    """The settings: flags (``overrides``), environment, env file, defaults (``local``: a
    local stack's command, which falls back on the stack's env file)."""
    env_file = Path(args.env_file) if getattr(args, "env_file", None) else None
    return load_settings(env_file, local=local, **overrides)


def with_env(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--env-file",
        help="KEY=VALUE settings file (default: $REPLICATOR_ENV_FILE; the local stack's"
        " .replicator/stack/stack.env only when named)",
    )
    return p


def _number(kind: type, minimum: float, what: str) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, "a positive integer")
non_negative_int = _number(int, 0, "an integer of 0 or more")
positive_seconds = _number(float, 0.001, "a positive number of seconds")
non_negative_seconds = _number(float, 0, "a number of seconds of 0 or more")
