"""What every command module of the CLI shares: exit codes, the settings loader and the
``--env-file`` option."""

from __future__ import annotations

import argparse
import gc
from pathlib import Path
from typing import Any

from replicator.settings import Settings, load_settings

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_REFUSED = 0, 1, 2, 3
#: A command whose output pipe was closed (`| head`) ends as one killed by SIGPIPE would.
EXIT_SIGPIPE = 141
#: Every exit code of every command, with what it means (the docs' reference lists it).
EXIT_MEANINGS = {
    EXIT_OK: "done: the command did its work and the answer is yes (in sync, ready, running)",
    EXIT_FAILED: "done, and the answer is no: drift, not ready, a criterion missed, rows"
    " that could not be loaded or re-driven; the output says which",
    EXIT_CONFIG: "could not do its work: bad input (an argument, a setting, a file), or a"
    " part it needs out of reach (the database, the broker, Kafka Connect); stderr says why",
    EXIT_REFUSED: "refused: the request is valid but the state forbids it (a cutover closed the"
    " stream, a finalize ended the rollback window); nothing was changed; stderr says why"
    " and what, if anything, makes it possible again",
    130: "interrupted (Ctrl-C, SIGINT): run the same command again to finish what it started",
    EXIT_SIGPIPE: "its output pipe was closed (`| head`), as a command killed by SIGPIPE",
}

Subparsers = Any  # argparse's private _SubParsersAction


def settings_from(args: argparse.Namespace, *, local: bool = False, **overrides: Any) -> Settings:
    """The settings: flags (``overrides``), environment, env file, defaults (``local``: a
    local stack's command, which falls back on the stack's env file)."""
    env_file = Path(args.env_file) if getattr(args, "env_file", None) else None
    return load_settings(env_file, local=local, **overrides)


#: The collector's generation thresholds in a process that streams events.
STREAMING_GC = (50_000, 20, 100)


def tune_for_streaming() -> None:
    """Set the garbage collector for a process that streams events (``run``, ``replay``).

    Each event allocates a few containers (its dicts, its tuples) that reference counting
    frees, cycles being rare; at the default threshold (700 allocations) a collection runs
    every hundred events or so, and a batch's live events are scanned again and again in
    the older generations.  That was about 2.5 of 19 microseconds of CPU per event with
    the events in memory (bench/stages.py).  Collections now run every few thousand
    events, and what was allocated at start-up (modules, settings) is frozen out of them.
    The collector still runs: the rare cycle is still freed, a little later."""
    gc.freeze()
    gc.set_threshold(*STREAMING_GC)


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
