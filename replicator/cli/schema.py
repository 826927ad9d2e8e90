"""``replicator schema apply``: create the missing tables, indexes and roles."""

from __future__ import annotations

import argparse

from replicator.cli.common import EXIT_OK, Subparsers, settings_from, with_env
from replicator.errors import ConfigurationError


def add_parser(sub: Subparsers) -> None:
    p = with_env(sub.add_parser("schema", help="create missing tables and indexes"))
    p.add_argument("action", choices=["apply"])
    p.add_argument(
        "--no-source",
        dest="source",
        action="store_false",
        help="do not create the legacy table in the source",
    )
    p.add_argument(
        "--target-table", help="target table (default: workflow_runs or REPLICATOR_TARGET_TABLE)"
    )
    p.add_argument(
        "--grant-to",
        metavar="ROLE",
        help="grant ROLE what 'replicator run' needs on the target table (schemas/roles.sql"
        " does it for the default names)",
    )
    p.add_argument(
        "--roles",
        action="store_true",
        help="then run schemas/roles.sql: the Debezium and replicator roles, the"
        " publication, the grants (as the tables' owner, with CREATEROLE)",
    )
    p.set_defaults(func=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    from replicator.db.schema import (
        apply_roles,
        apply_source_schema,
        apply_target_schema,
        grant_to_service_role,
    )

    settings = settings_from(args, target_table=args.target_table).as_admin()
    if settings.source_dsn is not None and args.source:
        for line in apply_source_schema(settings.source_dsn.get_secret_value()):
            print(f"source: {line}")
    target = settings.target_dsn.get_secret_value()
    for line in apply_target_schema(target, settings.target_table, settings.offsets_table):
        print(f"target: {line}")
    if args.grant_to:
        for line in grant_to_service_role(
            target, args.grant_to, settings.target_table, settings.offsets_table
        ):
            print(f"target: {line}")
    if args.roles:
        if settings.source_dsn is None:
            raise ConfigurationError("--roles needs the source database; set REPLICATOR_SOURCE_DSN")
        for line in apply_roles(settings.source_dsn.get_secret_value(), target):
            print(f"roles: {line}")
    return EXIT_OK
