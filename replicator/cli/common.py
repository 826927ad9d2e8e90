"""What every command module of the CLI shares: exit codes, the settings loader and the
``--env-file`` option."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from replicator.settings import Settings, load_settings

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

Subparsers = Any  # argparse's private _SubParsersAction


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The settings: flags (``overrides``), environment, env file, defaults."""
    env_file = Path(args.env_file) if getattr(args, "env_file", None) else None
    return load_settings(env_file, **overrides)


def with_env(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--env-file",
        help="KEY=VALUE settings file (default: $REPLICATOR_ENV_FILE, "
        "else .replicator/stack/stack.env when present)",
    )
    return p
