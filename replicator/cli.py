"""The ``replicator`` command line: parse, build settings, call one function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from replicator import __version__
from replicator.errors import ConfigurationError, ReplicatorError, TransientError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
#: Debezium PostgreSQL connector's snapshot.mode values.
SNAPSHOT_MODES = (
    "initial",
    "initial_only",
    "no_data",
    "always",
    "when_needed",
    "configuration_based",
    "custom",
)


def _stack_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or os.environ.get("REPLICATOR_STACK_DIR", ".replicator/stack"))


def _settings(args: argparse.Namespace, **overrides: Any):
    from replicator.settings import load_settings

    env_file = Path(args.env_file) if getattr(args, "env_file", None) else None
    return load_settings(env_file, **overrides)


def cmd_stack(args: argparse.Namespace) -> int:
    from replicator.stack import LocalStack

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


def cmd_schema(args: argparse.Namespace) -> int:
    from replicator.schema import (
        apply_roles,
        apply_source_schema,
        apply_target_schema,
        grant_to_service_role,
    )

    settings = _settings(args, target_table=args.target_table).as_admin()
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


def cmd_connector(args: argparse.Namespace) -> int:
    from replicator.connect import ConnectClient, mask_config
    from replicator.stack import CONNECTOR_FILE, load_connector_file

    settings = _settings(args)
    if not settings.connect_url:
        raise ConfigurationError("connect_url is not set; set REPLICATOR_CONNECT_URL")
    spec = load_connector_file(Path(args.file) if args.file else CONNECTOR_FILE)
    client = ConnectClient(settings.connect_url)
    name = spec["name"]
    if args.snapshot_mode:
        spec["config"]["snapshot.mode"] = args.snapshot_mode
    if args.action == "apply":
        client.put_config(name, spec["config"])
        client.wait_running(name, timeout=args.timeout)
        print(json.dumps(mask_config(client.get_config(name)), indent=2, sort_keys=True))
    elif args.action == "restart":
        client.restart(name)
        client.wait_running(name, timeout=args.timeout)
    elif args.action == "delete":
        client.delete(name)
        print(f"deleted connector {name} (its replication slot and publication remain)")
        return EXIT_OK
    status = client.status(name)
    print(json.dumps(status, indent=2))
    tasks = status.get("tasks", [])
    running = (
        status["connector"]["state"] == "RUNNING"
        and tasks
        and all(t["state"] == "RUNNING" for t in tasks)
    )
    return EXIT_OK if running else EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    from replicator import logs
    from replicator.consumer import Replicator

    settings = _settings(
        args,
        on_delete=args.on_delete,
        on_truncate=args.on_truncate,
        group_id=args.group_id,
        target_table=args.target_table,
        batch_max_rows=args.batch_max_rows,
        batch_max_ms=args.batch_max_ms,
        log_format=args.log_format,
        metrics_port=args.metrics_port,
    )
    logs.configure(settings.log_format, settings.log_level)
    replicator = Replicator(settings)

    def stop(signum: int, _frame: object) -> None:
        logging.getLogger("replicator").info(
            "stopping", extra={"signal": signal.Signals(signum).name}
        )
        replicator.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return replicator.run(exit_when_idle_s=args.exit_when_idle)


def cmd_config(args: argparse.Namespace) -> int:
    from replicator.settings import effective

    values = effective(_settings(args))
    if args.json:
        print(json.dumps(values, indent=2, default=str))
    else:
        width = max(map(len, values))
        for name, value in values.items():
            print(f"{name:<{width}}  {value}")
    return EXIT_OK


def cmd_backfill(args: argparse.Namespace) -> int:
    from replicator import progress
    from replicator.backfill import backfill

    settings = _settings(args, target_table=args.target_table)
    report = backfill(
        settings,
        workers=args.workers,
        chunk_rows=args.chunk_rows,
        restart=args.restart,
        via=args.via,
        check_slot=args.slot_check,
        defer=args.defer_indexes,
        progress=progress.for_stream(f"backfill {settings.target_table}"),
    )
    print("\n".join(report.summary()))
    return EXIT_FAILED if report.rejects_total else EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from replicator import logs
    from replicator.meter import Meter
    from replicator.verify import Options, verify
    from replicator.verify_report import EXIT_UNVERIFIED, show

    settings = _settings(args, target_table=args.target_table)
    logs.configure(settings.log_format, "WARNING")
    options = Options(chunk_rows=args.chunk_rows, catch_up_timeout_s=args.catch_up_timeout)
    try:
        report = verify(settings, options=options, repair_drift=args.repair, meter=Meter())
    except ConfigurationError:
        raise
    except ReplicatorError as exc:
        print(f"replicator: could not verify: {exc}", file=sys.stderr)
        return EXIT_UNVERIFIED
    show(report, as_json=args.json, max_report=args.max_report)
    return report.exit_code


def cmd_replay(args: argparse.Namespace) -> int:
    from replicator import logs
    from replicator.meter import Meter
    from replicator.replay import replay
    from replicator.verify_report import show

    settings = _settings(args, target_table=args.target_table)
    logs.configure(settings.log_format, "WARNING")
    report = replay(settings, into=args.into, swap=args.swap, drop_old=args.drop_old, meter=Meter())
    print("\n".join(report.summary()))
    if report.verify is not None:
        show(report.verify, as_json=False)
        if not report.swapped:
            print(f"not swapped: the replayed table {report.table} is left for inspection")
            return report.verify.exit_code or EXIT_FAILED
    return EXIT_OK


def cmd_sample(args: argparse.Namespace) -> int:
    from replicator.sample import insert_rows

    settings = _settings(args).as_admin()  # it writes legacy rows, as the application would
    if settings.source_dsn is None:
        raise ConfigurationError("source_dsn is not set; set REPLICATOR_SOURCE_DSN")
    count = insert_rows(
        settings.source_dsn.get_secret_value(), args.rows, seed=args.seed, start=args.start
    )
    print(f"inserted {count} sample rows into workflow_processes")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replicator",
        description="Replicate workflow_processes into workflow_runs from Debezium change events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_env(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--env-file",
            help="KEY=VALUE settings file (default: $REPLICATOR_ENV_FILE, "
            "else .replicator/stack/stack.env when present)",
        )
        return p

    p = sub.add_parser("stack", help="the local stack: PostgreSQL, broker, Kafka Connect")
    p.add_argument("action", choices=["up", "down", "status", "destroy"])
    p.add_argument("--state-dir", help="state folder (default .replicator/stack)")
    p.add_argument(
        "--separate-target",
        action="store_true",
        help="put workflow_runs in its own database (at first 'up' only)",
    )
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.set_defaults(func=cmd_stack)

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

    p = with_env(sub.add_parser("connector", help="manage the Debezium connector"))
    p.add_argument("action", choices=["apply", "status", "restart", "delete"])
    p.add_argument("--file", help="connector JSON (default connectors/workflow-processes.json)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument(
        "--snapshot-mode",
        choices=SNAPSHOT_MODES,
        help="override the file's snapshot.mode (no_data before a 'replicator backfill')",
    )
    p.set_defaults(func=cmd_connector)

    p = with_env(sub.add_parser("run", help="replicate until stopped (SIGTERM/SIGINT)"))
    p.add_argument("--on-delete", choices=["delete", "ignore"])
    p.add_argument("--on-truncate", choices=["ignore", "apply"])
    p.add_argument("--group-id")
    p.add_argument("--target-table")
    p.add_argument("--batch-max-rows", type=int)
    p.add_argument("--batch-max-ms", type=int)
    p.add_argument("--log-format", choices=["json", "human"])
    p.add_argument(
        "--metrics-port", type=int, help="serve /metrics, /healthz and /readyz on this port"
    )
    p.add_argument(
        "--exit-when-idle",
        type=float,
        metavar="SECONDS",
        help="exit 0 once no event arrived for this long (one-shot catch-up)",
    )
    p.set_defaults(func=cmd_run)

    p = with_env(sub.add_parser("config", help="the effective settings, secrets masked"))
    p.add_argument("action", choices=["show"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_config)

    p = with_env(
        sub.add_parser(
            "backfill",
            help="initial load straight from the source table, resumable (register the"
            " connector with --snapshot-mode no_data first)",
        )
    )
    p.add_argument("--workers", type=int, default=2, help="chunks in flight (default 2)")
    p.add_argument("--chunk-rows", type=int, default=50_000, help="rows per chunk (default 50000)")
    p.add_argument("--target-table")
    p.add_argument("--restart", action="store_true", help="forget finished chunks, plan again")
    p.add_argument(
        "--via",
        choices=["auto", "sql", "copy", "python"],
        default="auto",
        help="sql: in the database (source and target in one database; auto's choice);"
        " copy: COPY into the target, mapped there (auto's choice otherwise);"
        " python: map_to_tuple and the sink's merge",
    )
    p.add_argument(
        "--no-slot-check",
        dest="slot_check",
        action="store_false",
        help="run even without a logical replication slot on the source (nothing streams"
        " the changes made meanwhile)",
    )
    p.add_argument(
        "--defer-indexes",
        action="store_true",
        help="drop the target's secondary indexes while loading, create them after the last"
        " chunk (faster; needs to own the table)",
    )
    p.set_defaults(func=cmd_backfill)

    p = with_env(
        sub.add_parser(
            "verify",
            help="compare workflow_processes (mapped) with the target table; exit 0 in sync,"
            " 1 drift found, 2 could not verify",
        )
    )
    p.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    p.add_argument(
        "--repair",
        action="store_true",
        help="re-sync the drifted rows (incremental snapshot; extra rows deleted), verify again",
    )
    p.add_argument("--chunk-rows", type=int, default=10_000, help="rows per checksum chunk")
    p.add_argument("--max-report", type=int, default=20, help="ids listed per kind of difference")
    p.add_argument("--target-table")
    p.add_argument(
        "--catch-up-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long differences wait for the replicator to catch up before they count"
        " (0: compare as is, for a copy nothing streams into)",
    )
    p.set_defaults(func=cmd_verify)

    p = with_env(
        sub.add_parser(
            "replay",
            help="rebuild a table from the topic (no consumer group), up to where it ends now",
        )
    )
    p.add_argument(
        "--into",
        help="table to rebuild (default <target>_replay, emptied first; the target table"
        " itself is replayed into in place, idempotently)",
    )
    p.add_argument(
        "--swap",
        action="store_true",
        help="verify the rebuilt table, then swap it in for the target table atomically",
    )
    p.add_argument(
        "--drop-old",
        action="store_true",
        help="with --swap: drop the previous table instead of keeping it as <target>_old_<time>",
    )
    p.add_argument("--target-table")
    p.set_defaults(func=cmd_replay)

    p = with_env(sub.add_parser("sample", help="insert sample legacy rows into the source"))
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", type=int, default=0, help="first row number (ids wp-<n>)")
    p.set_defaults(func=cmd_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
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
