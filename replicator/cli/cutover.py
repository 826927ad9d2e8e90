"""``replicator cutover`` and ``replicator rollback``: phases 3 and 4 of the plan, and back."""

from __future__ import annotations

import argparse
from typing import Any

from replicator.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    non_negative_seconds,
    positive_seconds,
    settings_from,
    with_env,
)


def add_parser(sub: Subparsers) -> None:
    p = with_env(
        sub.add_parser(
            "cutover",
            help="move the application to workflow_runs: archive the legacy table, a"
            " compatibility view in its place (--dry-run: readiness only)",
            description="Run as the tables' owner (REPLICATOR_ADMIN_*_DSN). Without options:"
            " the readiness checks, then the switch (writers of workflow_processes wait for"
            " it, measured), then the connector is deleted and its slot dropped.",
        )
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run", action="store_true", help="the readiness checks only; exit 0 ready, 1 not"
    )
    mode.add_argument(
        "--readers-view",
        metavar="NAME",
        help="phase 3 alone: the compatibility view, read-only, under NAME;"
        " the legacy table keeps the writes",
    )
    mode.add_argument(
        "--drop-readers-view",
        metavar="NAME",
        help="remove the readers' view NAME made by --readers-view",
    )
    mode.add_argument(
        "--finalize",
        action="store_true",
        help="end the rollback window: drop the change log and the publication (keeps the"
        " view, the archive and the record)",
    )
    p.add_argument(
        "--drain-timeout",
        type=non_negative_seconds,
        default=0.0,
        metavar="SECONDS",
        help="how long the switch, writers waiting, lets the stream deliver the last changes"
        " before writing the rest itself from the still legacy table (default 0: at once;"
        " the result is the same, the wait is not)",
    )
    p.add_argument(
        "--lock-timeout",
        type=positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="how long one try to lock the legacy table may wait (default 2; 15 tries)",
    )
    p.set_defaults(func=cmd_cutover)
    r = with_env(
        sub.add_parser(
            "rollback",
            help="undo the cutover while the application writes: the legacy table back with"
            " every write made since, the connector and slot back, replication resumed",
        )
    )
    r.add_argument("--dry-run", action="store_true", help="the readiness checks only")
    r.add_argument(
        "--lock-timeout",
        type=positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="how long one try to lock the view and the archive may wait (default 2; 15 tries)",
    )
    r.set_defaults(func=cmd_rollback)


def _print_checks(checks: list[Any]) -> bool:
    for c in checks:
        print(f"  {'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.reason}")
    ready = all(c.ok for c in checks)
    print("ready" if ready else "not ready")
    return ready


def cmd_cutover(args: argparse.Namespace) -> int:
    from replicator.cutover import readers, readiness, switch
    from replicator.cutover.objects import latest
    from replicator.db.connect import connect
    from replicator.mapping.columns import SOURCE_TABLE

    settings = settings_from(args)
    if args.readers_view:
        grants = readers.create(settings, args.readers_view)
        print(
            f"view {args.readers_view}: workflow_runs in the legacy shape, read-only"
            f" ({grants} grants copied)"
        )
        return EXIT_OK
    if args.drop_readers_view:
        readers.drop(settings, args.drop_readers_view)
        print(f"view {args.drop_readers_view} dropped")
        return EXIT_OK
    with connect(settings.as_admin().target_dsn.get_secret_value(), "the database") as conn:
        record = latest(conn, SOURCE_TABLE)
    if args.finalize:
        if record is not None and record.state == "finalized":  # as `cutover` twice: done
            print(f"the cutover of {record.cut_at:%Y-%m-%d %H:%M:%S%z} is finalized already")
            return EXIT_OK
        record = switch.finalize(settings)
        print(
            f"finalized the cutover of {record.cut_at:%Y-%m-%d %H:%M:%S%z}: change log and"
            " publication dropped; kept: the view, the archive (read-only), the record"
        )
        return EXIT_OK
    if record is not None and record.state in ("cut_over", "finalized"):
        return _after_cutover(args, settings, record)
    print("readiness", flush=True)
    checks = readiness.cutover_checks(
        settings, say=lambda line: print(f"  ...   {line}", flush=True)
    )
    if not _print_checks(checks):
        return EXIT_FAILED
    if args.dry_run:
        return EXIT_OK
    done = switch.cut_over(
        settings,
        drain_timeout_s=args.drain_timeout,
        lock_timeout_s=args.lock_timeout,
        say=lambda line: print(f"  ...   {line}", flush=True),
    )
    print(
        f"cut over at LSN {done.lsn}: workflow_processes is now a view of workflow_runs;"
        f" the legacy table is workflow_processes_archive"
    )
    print(f"  writers and readers of workflow_processes waited at most {done.blocked_ms} ms")
    print(f"  rows: {done.source_rows:,} legacy, {done.target_rows:,} in workflow_runs")
    print(
        f"  the stream had {'' if done.drained else 'not '}delivered everything by the switch;"
        f" {done.repaired} rows written from the legacy table; {done.grants} grants copied"
    )
    return EXIT_OK if switch.finish(settings, print) else EXIT_FAILED


def _after_cutover(args: argparse.Namespace, settings: Any, record: Any) -> int:
    """``cutover`` once the switch has committed: ``--dry-run`` says what is true and what
    is left (exit 1 while anything is); without it, what is left is removed."""
    from replicator.cutover import leftovers
    from replicator.mapping.columns import SOURCE_TABLE

    when = f"{record.cut_at:%Y-%m-%d %H:%M:%S%z}"
    left = leftovers.found(settings, record)
    if args.dry_run:  # nothing to be ready for: say what is true
        print(
            f"cut over at {when} ({record.state.replace('_', ' ')}): {SOURCE_TABLE} is a"
            " view of workflow_runs, the stream is closed and `replicator run` stays up"
            " idle; "
            + (
                "`replicator rollback --dry-run` checks the way back"
                if record.state == "cut_over"
                else "the rollback window is closed"
            )
        )
        if left:
            print(leftovers.summary(left))
        return EXIT_FAILED if left else EXIT_OK
    if not left:
        state = "finalized" if record.state == "finalized" else "cut over"
        print(f"{state} at {when}, nothing left to do")
        return EXIT_OK
    print(f"cut over already at {when}; finishing what is left: {'; '.join(left)}")
    return EXIT_OK if leftovers.remove(settings, record, print) else EXIT_FAILED


def _refuse_after_finalize(settings: Any) -> None:
    """A finalized cutover has no way back: say so, as a refusal, not as "not ready"."""
    from replicator.cutover.guard import closed_by
    from replicator.errors import Refused

    record = closed_by(settings.as_admin().target_dsn.get_secret_value())
    if record is not None and record.state == "finalized":
        raise Refused(
            f"rollback: the cutover of {record.cut_at:%Y-%m-%d %H:%M:%S%z} was finalized,"
            " and the finalize closed the rollback window: the change log of the writes made"
            " since the cutover is gone, so there is no way back to the legacy table;"
            " workflow_processes stays a view of workflow_runs, the archive read-only"
        )


def cmd_rollback(args: argparse.Namespace) -> int:
    from replicator.cutover import readiness, rollback

    settings = settings_from(args)
    _refuse_after_finalize(settings)
    if rollback.unfinished(settings):
        print("the rollback committed; its last step, registering the connector, did not finish")
        if args.dry_run:
            return EXIT_OK
        rollback.reconnect(settings, print)
        print("start replicator run again: it resumes from the positions of the cutover")
        return EXIT_OK
    print("readiness")
    if not _print_checks(readiness.rollback_checks(settings)):
        return EXIT_FAILED
    if args.dry_run:
        return EXIT_OK
    done = rollback.roll_back_with_slot(settings, print, lock_timeout_s=args.lock_timeout)
    print(f"rolled back at LSN {done.lsn}: workflow_processes is a table again")
    print(f"  writers of workflow_processes and workflow_runs waited at most {done.blocked_ms} ms")
    print(f"  {done.restored} rows written since the cutover restored in the legacy table")
    rollback.reconnect(settings, print)
    print("start replicator run again: it resumes from the positions of the cutover")
    return EXIT_OK
