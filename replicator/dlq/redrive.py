"""``replicator dlq redrive``: apply dead letters again, through ``run``'s own path.

Each dead letter goes through the same decode, transform (with the target's actual
``total_cost`` type, so that widening the column lets an overflowing value through),
order guard and sink as ``replicator run``, one transaction per letter.  Invariants:

* a letter a newer applied change of its row supersedes (superseded.py: its row's entry
  in the versions table is newer than the letter's event) is decided so once decoded,
  BEFORE it is mapped: it is recorded as ``superseded``, resolved like a re-driven
  letter, never mapped or applied, and fails nothing (a value the mapping refuses, fixed
  at the source since, stays behind);
* a letter that now applies is recorded in ``replicator_redriven`` in the same
  transaction as its row, and so is one the order guard finds stale (an older image than
  the row's current version: skipped, never written over a newer change).  A second
  redrive skips every letter recorded so: nothing is applied twice;
* a letter that fails again (the mapping or the target still refuses it) is recorded as
  ``failed`` with its new error and stays in the topic: the next redrive tries it again;
* a letter that cannot be decoded (or was cut because it was too large) is left as is.

No partition position moves: a redrive is beside the stream, not part of it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from replicator.cutover.guard import refuse_after_cutover
from replicator.db.connect import connect, mapped_errors
from replicator.dlq import state
from replicator.dlq.letters import DeadLetter, read_dead_letters
from replicator.dlq.superseded import Superseded
from replicator.errors import DecodeError, EventError
from replicator.events import ApplyResult, ChangeEvent, KafkaPosition
from replicator.observe.progress import Progress
from replicator.settings import Settings
from replicator.stream.apply.generations import Generations
from replicator.stream.apply.sink import PostgresSink
from replicator.stream.apply.transform import to_row_change
from replicator.stream.source.decode import decoder_for

log = logging.getLogger("replicator.dlq")

OUTCOMES = ("applied", "superseded", "stale", "failed", "undecodable", "already", "skipped")


@dataclass
class RedriveReport:
    """What became of the selected dead letters (``would_apply`` on a dry run)."""

    topic: str
    selected: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    failures: list[tuple[DeadLetter, str]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if self.counts["failed"] else 0

    def summary(self) -> list[str]:
        c = self.counts
        verb = "would apply" if self.dry_run else "applied"
        newer = c["superseded"] + c["stale"]  # before mapping, or by the guard when applied
        lines = [
            f"redrive of {self.topic}: {self.selected} dead letters: {c['applied']} {verb},"
            f" {newer} superseded (a newer change of the row is applied),"
            f" {c['failed']} failed again,"
            f" {c['undecodable']} skipped as undecodable, {c['already']} re-driven before,"
            f" {c['skipped']} without a row change"
        ]
        lines += [
            f"  failed again: partition {d.partition} offset {d.offset} ({d.key_text}): {error}"
            for d, error in self.failures[:20]
        ]
        return lines


def selected(letters: list[DeadLetter], reason: str | None, key: str | None) -> list[DeadLetter]:
    """Pure. The letters of ``reason`` and of the event id or raw key ``key``."""

    def wanted(d: DeadLetter) -> bool:
        return (reason is None or d.reason == reason) and (
            key is None or key in (d.key_text, _event_id(d))
        )

    return [d for d in letters if wanted(d)]


def redrive(
    settings: Settings,
    *,
    reason: str | None = None,
    key: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> RedriveReport:
    """Apply the selected dead letters again (module docstring)."""
    settings = settings.as_admin()
    refuse_after_cutover(settings, settings.target_table, "dlq redrive")
    progress = progress or Progress(enabled=False)
    letters = selected(read_dead_letters(settings), reason, key)
    report = RedriveReport(settings.dead_letter_topic, len(letters), dry_run=dry_run)
    sink = PostgresSink(
        settings.target_dsn.get_secret_value(),
        table=settings.target_table,
        offsets_table=settings.offsets_table,
        apply_deletes=settings.on_delete == "delete",
    )
    with sink:
        sink.ensure_schema()
        cost = sink.cost_column()  # read now: the operator may just have widened it
        # A letter's generation, from its place in the change topic (none known: the oldest)
        generations = Generations(sink.load_generations(settings.topic))
        with (
            connect(settings.target_dsn.get_secret_value(), "the target database") as conn,
            mapped_errors("record the re-driven dead letters"),
        ):
            done = state.outcomes(conn, settings.target_table, report.topic)
            decode = decoder_for(settings)
            newer = Superseded(conn, sink.versions_table)
            progress.start(f"redrive {report.topic}", len(letters), "letters")
            for letter in letters:
                outcome = _one(letter, done, decode, (cost, generations), sink, report, newer)
                report.counts[outcome] += 1
                if outcome in ("failed", "superseded") and not dry_run:
                    place = (letter.partition, letter.offset)
                    error = report.failures[-1][1] if outcome == "failed" else None
                    state.record(conn, settings.target_table, report.topic, place, outcome, error)
                progress.advance()
            progress.finish()
    return report


def _one(
    letter: DeadLetter,
    done: dict[tuple[int, int], str],
    decode: Callable[..., Any],
    mapping: tuple[Any, Generations],
    sink: PostgresSink,
    report: RedriveReport,
    superseded: Callable[[ChangeEvent, int], bool],
) -> str:
    if done.get((letter.partition, letter.offset)) in state.FINAL:
        return "already"
    topic, partition, offset = letter.origin
    position = KafkaPosition(topic or "", partition or 0, offset if offset is not None else -1)
    try:
        event = decode(letter.key, letter.value, position)
    except DecodeError:
        return "undecodable"
    cost, generations = mapping
    generation = 0 if offset is None or partition is None else generations.at(partition, offset)
    if event is not None and superseded(event, generation):  # decided before mapping it
        return "superseded"
    try:
        change = to_row_change(event, cost, generation) if event is not None else None
    except EventError as exc:
        report.failures.append((letter, str(exc)))
        return "failed"
    if change is None:
        return "skipped"
    try:
        if report.dry_run:  # the same statements, rolled back: exactly what would happen
            result = sink.apply([change], [], rehearse=True)
        else:
            result = sink.apply([change], [], then=_recorder(letter, report.topic, sink.table))
    except EventError as exc:
        report.failures.append((letter, str(exc)))
        return "failed"
    if result.unresolved:
        report.failures.append((letter, "unchanged TOASTed columns of a row the target lacks"))
        return "failed"
    return "stale" if result.stale else "applied"


def _recorder(
    letter: DeadLetter, topic: str, table: str
) -> Callable[[psycopg.Connection[Any], ApplyResult], None]:
    """Records the letter in the transaction of its row (unless the row was unresolved)."""

    def record(conn: psycopg.Connection[Any], result: ApplyResult) -> None:
        if not result.unresolved:
            outcome = "stale" if result.stale else "applied"
            state.record(conn, table, topic, (letter.partition, letter.offset), outcome)

    return record


def _event_id(letter: DeadLetter) -> str | None:
    try:
        key = json.loads(letter.key or b"")
    except ValueError:
        return None
    return key.get("id") if isinstance(key, dict) and isinstance(key.get("id"), str) else None
