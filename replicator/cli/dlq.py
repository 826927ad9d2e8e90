"""``replicator dlq list|show|redrive``: the dead-letter topic as a queue."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from replicator.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    Subparsers,
    non_negative_int,
    settings_from,
    with_env,
)
from replicator.errors import ConfigurationError, Refused, ReplicatorError
from replicator.settings import Settings


def add_parser(sub: Subparsers) -> None:
    p = with_env(
        sub.add_parser(
            "dlq",
            help="what the dead-letter topic holds; apply dead letters again",
            description="list: the dead letters by reason (counts, times, origin offsets, sample"
            " keys; no row contents); show: one dead letter with its headers and payload;"
            " redrive: apply dead letters again through run's decode, mapping, order guard and"
            " sink; a letter a newer applied change of its row supersedes is resolved as"
            " superseded before it is mapped, never applied (exit 0 none failed, 1 some failed"
            " again, 2 could not run); dismiss: record"
            " the selected dead letters (--reason, --key, --origin) as fixed another way (after"
            " verify --repair, say): redrive skips them from then on.",
        )
    )
    p.add_argument("action", choices=["list", "show", "redrive", "dismiss"])
    p.add_argument(
        "offset", nargs="?", type=non_negative_int, help="show: its offset in the dead-letter topic"
    )
    p.add_argument("--partition", type=non_negative_int, help="show: its partition (default 0)")
    p.add_argument(
        "--origin",
        type=_origin,
        help="show: the dead letter of the change event at PARTITION:OFFSET of the change"
        " topic (the origin `dlq list` prints)",
    )
    p.add_argument("--key", help="only the dead letters of this event id (or raw key)")
    p.add_argument("--reason", help="only the dead letters of this reason (dlq.reason)")
    p.add_argument("--json", action="store_true", help="list: one JSON object per dead letter")
    p.add_argument("--dry-run", action="store_true", help="redrive: say what would be applied")
    p.add_argument("--target-table", help="redrive into this table (default workflow_runs)")
    p.set_defaults(func=cmd_dlq)


def _origin(text: str) -> tuple[int, int]:
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not PARTITION:OFFSET (e.g. 2:1041)")
    return int(partition), int(offset)


def cmd_dlq(args: argparse.Namespace) -> int:
    from replicator.errors import DEAD_LETTER_REASONS
    from replicator.observe import logs

    if args.action in ("list", "redrive") and (args.offset is not None or args.origin is not None):
        raise ConfigurationError(f"dlq {args.action} takes no offset or --origin (dlq show does)")
    if args.action == "dismiss" and not (args.reason or args.key or args.origin):
        raise ConfigurationError("dlq dismiss needs --reason, --key or --origin: which letters")
    if args.reason is not None and args.reason not in DEAD_LETTER_REASONS:
        raise ConfigurationError(
            f"--reason {args.reason!r} is no dead-letter reason; one of:"
            f" {', '.join(DEAD_LETTER_REASONS)}"
        )
    settings = settings_from(args, target_table=args.target_table)
    logs.configure(settings.log_format, "WARNING")
    try:
        if args.action == "redrive":
            return _redrive(args, settings)
        if args.action == "dismiss":
            return _dismiss(args, settings)
        return _show(args, settings) if args.action == "show" else _list(args, settings)
    except (ConfigurationError, Refused):
        raise
    except ReplicatorError as exc:
        print(f"replicator: could not {args.action} the dead letters: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _outcomes(settings: Settings) -> dict[tuple[int, int], str]:
    """What redrives did, when the target can be read (list works without it)."""
    from replicator.db.connect import connect, mapped_errors
    from replicator.dlq import state

    try:
        with (
            connect(settings.target_dsn.get_secret_value(), "the target database") as conn,
            mapped_errors("read the re-driven dead letters"),
        ):
            return state.outcomes(
                conn,
                settings.target_table,
                settings.dead_letter_topic,
            )
    except ReplicatorError:
        return {}


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.dlq.letters import read_dead_letters
    from replicator.dlq.listing import dumps, event_dict, groups, list_lines
    from replicator.dlq.redrive import selected

    letters = selected(read_dead_letters(settings), args.reason, args.key)
    done = _outcomes(settings)
    topic = settings.dead_letter_topic
    if args.json:
        events = [event_dict(d, done.get((d.partition, d.offset))) for d in letters]
        found = [g.to_dict() for g in groups(letters, done)]
        print(dumps({"topic": topic, "groups": found, "events": events}))
    else:
        print("\n".join(list_lines(topic, groups(letters, done))))
    return EXIT_OK


def _chosen(args: argparse.Namespace, settings: Settings) -> list[Any]:
    """The dead letters the arguments select: --reason, --key, the letter's own place
    (offset, --partition), or the place of the event it came from (--origin)."""
    from replicator.dlq.letters import read_dead_letters
    from replicator.dlq.redrive import selected

    letters = selected(read_dead_letters(settings), args.reason, args.key)
    if args.offset is not None:
        place = (args.partition or 0, args.offset)
        letters = [d for d in letters if (d.partition, d.offset) == place]
    if args.origin is not None:
        letters = [d for d in letters if d.origin[1:] == args.origin]
    return letters


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.dlq.listing import dumps, show_dict

    if args.offset is None and args.key is None and args.origin is None:
        raise ConfigurationError("dlq show needs an offset, --origin or --key")
    letters = _chosen(args, settings)
    if not letters:  # bad input, as an unknown --reason is: exit 2
        print(
            f"replicator: dlq show: {_wanted(args)}: {settings.dead_letter_topic} holds no"
            " such dead letter (`replicator dlq list` shows what it holds)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    done = _outcomes(settings)
    print(dumps([show_dict(d, done.get((d.partition, d.offset))) for d in letters]))
    return EXIT_OK


def _wanted(args: argparse.Namespace) -> str:
    """Pure.  The selection ``dlq show`` was given, in its words."""
    wanted = []
    if args.offset is not None:
        wanted.append(f"offset {args.offset} of partition {args.partition or 0}")
    if args.origin is not None:
        wanted.append(f"origin {args.origin[0]}:{args.origin[1]}")
    for flag, value in (("--key", args.key), ("--reason", args.reason)):
        if value is not None:
            wanted.append(f"{flag} {value}")
    return ", ".join(wanted)


def _redrive(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.dlq.redrive import redrive
    from replicator.observe.progress import Progress

    report = redrive(
        settings,
        reason=args.reason,
        key=args.key,
        dry_run=args.dry_run,
        progress=Progress(),
    )
    print("\n".join(report.summary()))
    return report.exit_code


def _dismiss(args: argparse.Namespace, settings: Settings) -> int:
    from replicator.db.connect import connect, mapped_errors
    from replicator.dlq import state

    letters = _chosen(args, settings)
    admin = settings.as_admin()
    topic = settings.dead_letter_topic
    with (
        connect(admin.target_dsn.get_secret_value(), "the target database") as conn,
        mapped_errors("record the dismissed dead letters"),
    ):
        done = state.outcomes(conn, settings.target_table, topic)
        todo = [d for d in letters if done.get((d.partition, d.offset)) not in state.FINAL]
        for d in todo:
            state.record(conn, settings.target_table, topic, (d.partition, d.offset), "dismissed")
    print(
        f"dismissed {len(todo)} dead letters of {topic} for {settings.target_table}"
        f" ({len(letters) - len(todo)} selected were re-driven or dismissed before)"
    )
    return EXIT_OK
