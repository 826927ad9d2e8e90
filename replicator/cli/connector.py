"""``replicator connector apply|status|restart|delete``: the Debezium connector."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from replicator.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    positive_seconds,
    settings_from,
    with_env,
)
from replicator.clients.connect import ConnectClient, load_connector_file, mask_config
from replicator.errors import ConfigurationError, Refused

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


def add_parser(sub: Subparsers) -> None:
    p = with_env(
        sub.add_parser(
            "connector",
            help="manage the Debezium connector",
            description="apply: register or update the connector from its file and wait until"
            " it runs; status: its state and its tasks' (exit 1 unless RUNNING); restart: restart"
            " it with its tasks; delete: remove it (its replication slot stays).",
        )
    )
    p.add_argument("action", choices=["apply", "status", "restart", "delete"])
    p.add_argument(
        "--file", help="connector JSON (default: the bundled connectors/workflow-processes.json)"
    )
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long apply and restart wait for RUNNING, and --resnapshot for each of its"
        " steps (default 60 s)",
    )
    p.add_argument(
        "--resnapshot",
        action="store_true",
        help="apply only: take a new initial snapshot from a new slot (the slot was lost, or"
        " the target must be re-based): the stored source offsets and the slot are dropped,"
        " the snapshot wins over older streamed changes and the rows deleted meanwhile are"
        " removed by `replicator run` once it has read the snapshot",
    )
    p.add_argument(
        "--snapshot-mode",
        choices=SNAPSHOT_MODES,
        help="override the file's snapshot.mode (no_data before a 'replicator backfill')",
    )
    p.set_defaults(func=cmd_connector)


def cmd_connector(args: argparse.Namespace) -> int:

    settings = settings_from(args)
    if not settings.connect_url:
        raise ConfigurationError("connect_url is not set; set REPLICATOR_CONNECT_URL")
    spec = load_connector_file(Path(args.file) if args.file else settings.connector_file)
    client = ConnectClient(settings.connect_url)
    name = spec["name"]
    if args.action != "delete":
        closed = _closed_by_cutover(settings)
        if closed is not None:
            return _after_cutover(args, settings, name, closed)
    if args.resnapshot:
        return _resnapshot(args, settings, client, spec)
    if args.snapshot_mode:
        spec["config"]["snapshot.mode"] = args.snapshot_mode
    if args.action == "apply":
        status = client.apply(name, spec["config"], timeout=args.timeout)
        print(json.dumps(mask_config(client.get_config(name)), indent=2, sort_keys=True))
    elif args.action == "restart":
        client.restart(name)
        status = client.wait_running(name, timeout=args.timeout)
    elif args.action == "delete":
        client.delete(name)
        print(f"deleted connector {name} (its replication slot and publication remain)")
        return EXIT_OK
    else:
        status = client.status(name)
    print(json.dumps(status, indent=2))
    tasks = status.get("tasks", [])
    running = (
        status["connector"]["state"] == "RUNNING"
        and tasks
        and all(t["state"] == "RUNNING" for t in tasks)
    )
    unfinished = _unfinished_resnapshot(settings)
    if unfinished:
        print(unfinished)
    return EXIT_OK if running and not unfinished else EXIT_FAILED


def _unfinished_resnapshot(settings: Any) -> str | None:
    """What to say when the newest snapshot generation never completed (a ``--resnapshot``
    running now, or one interrupted): until one completes, rows deleted while nothing
    streamed stay in the target.  None when the database is out of reach (said on stderr)."""
    from replicator.db.connect import connect, mapped_errors
    from replicator.errors import ReplicatorError
    from replicator.stream.apply import generations

    try:
        dsn = settings.as_admin().target_dsn.get_secret_value()
        with connect(dsn, "the target database") as conn, mapped_errors("read the generations"):
            open_one = generations.unfinished(generations.load(conn, settings.topic))
    except ReplicatorError as exc:
        print(f"replicator: cannot read the snapshot generations ({exc})", file=sys.stderr)
        return None
    if open_one is None:
        return None
    return (
        f"snapshot generation {open_one.number} was recorded and its snapshot has not"
        " completed: a `connector apply --resnapshot` is running, or one was interrupted,"
        " or the topic was re-created by a broker that lost it (`replicator run` said so)."
        " Until one completes, rows deleted while nothing streamed stay in the target: if"
        " none is running, run `replicator connector apply --resnapshot` again."
    )


def _closed_by_cutover(settings: Any) -> Any:
    """The cutover that closed the stream, if one did (unknown when the database is out of
    reach: the connector commands then act as before, they do not need the database)."""
    from replicator.cutover.guard import closed_by
    from replicator.errors import ReplicatorError

    try:
        return closed_by(settings.as_admin().target_dsn.get_secret_value())
    except ReplicatorError as exc:
        print(f"replicator: cannot read the cutover record ({exc})", file=sys.stderr)
        return None


def _after_cutover(args: argparse.Namespace, settings: Any, name: str, closed: Any) -> int:
    """After a cutover the connector is gone by design: status reads whether it and its slot
    (and after the finalize the publication) are gone, and exits 0 only then; apply,
    restart and --resnapshot are refused (they would stream from a view, or create again
    the slot the cutover dropped)."""
    from replicator.cutover import leftovers
    from replicator.cutover.guard import describe

    if args.action == "status":
        left = leftovers.found(settings, closed)
        if left:
            print(f"connector {name} after the cutover: {leftovers.summary(left)}")
            return EXIT_FAILED
        print(f"connector {name}: not registered, by design (no slot left): {describe(closed)}")
        return EXIT_OK
    raise Refused(f"connector {args.action}: {describe(closed)}")


def _resnapshot(args: argparse.Namespace, settings: Any, client: Any, spec: dict[str, Any]) -> int:
    from replicator.stream.resnapshot import resnapshot

    if args.action != "apply":
        raise ConfigurationError("--resnapshot goes with `connector apply`")
    if args.snapshot_mode not in (None, "initial"):
        raise ConfigurationError("--resnapshot takes an initial snapshot: drop --snapshot-mode")
    from replicator.errors import ReplicatorError

    try:
        resnapshot(
            settings,
            client,
            spec["name"],
            spec["config"],
            timeout=args.timeout,
            say=lambda line: print(line, flush=True),
        )
    except ReplicatorError:
        print(
            "replicator: the re-snapshot did not finish; nothing is removed until one does:"
            " run `replicator connector apply --resnapshot` again",
            file=sys.stderr,
        )
        raise
    return EXIT_OK
