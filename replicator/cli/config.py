"""``replicator config show``: the effective settings, secrets masked."""

from __future__ import annotations

import argparse
import json

from replicator.cli.common import EXIT_OK, Subparsers, settings_from, with_env


def add_parser(sub: Subparsers) -> None:
    p = with_env(sub.add_parser("config", help="the effective settings, secrets masked"))
    p.add_argument("action", choices=["show"])
    p.add_argument("--json", action="store_true", help="the settings as JSON on stdout")
    p.set_defaults(func=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    from replicator.settings import effective

    values = effective(settings_from(args))
    if args.json:
        print(json.dumps(values, indent=2, default=str))
    else:
        width = max(map(len, values))
        for name, value in values.items():
            print(f"{name:<{width}}  {value}")
    return EXIT_OK
