"""Each question asked of both tables, the two sides interleaved.

Per question and side, two figures measured apart:

* server: ``EXPLAIN (ANALYZE, TIMING OFF)``'s planning plus execution time, the
  database's own work (rows counted, not sent);
* client: the statement sent and every row fetched and decoded by psycopg, as an
  application would (JSON columns parsed included).

Interleaving: each round asks every question of both sides back to back, the order of
the two alternating from one question and one round to the next (legacy first, then
new first), so that a burst of load, a checkpoint or a cold cache falls on both sides
alike.  One unmeasured round warms the caches first and records each side's answer:
the rows returned and a fingerprint of their first two columns (the ids and the type,
or the status and its count), which :func:`replicator.assess.criteria.answers_check`
compares.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from replicator.assess.plans import actual_rows, index_names, server_ms
from replicator.assess.questions import LEGACY, NEW, Question, left_out, not_compared, render
from replicator.assess.stats import Spread
from replicator.db.connect import mapped_errors


class Side(Protocol):
    """One table's answers: what :func:`measure` needs of it."""

    def sql(self, question: Question) -> str: ...

    def server(self, sql: str, params: dict[str, Any]) -> tuple[float, int, tuple[str, ...]]:
        """Milliseconds on the server, rows, the indexes the plan read through."""
        ...

    def client(self, sql: str, params: dict[str, Any]) -> tuple[float, int, str]:
        """Milliseconds at the client (rows fetched and decoded), rows, fingerprint."""
        ...


@dataclass(frozen=True, slots=True)
class SideTiming:
    server: Spread
    client: Spread
    rows: int
    indexes: tuple[str, ...]
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Answered:
    """One question's figures; ``left_out``: why it was not asked; ``not_compared``: why
    only the new table was asked."""

    name: str
    legacy: SideTiming | None = None
    new: SideTiming | None = None
    left_out: str | None = None
    not_compared: str | None = None

    @property
    def paired(self) -> bool:
        return self.legacy is not None and self.new is not None


def order(round_no: int, question_no: int) -> tuple[str, str]:
    """Which side goes first: alternating from one paired question to the next, and for
    each question from one round to the next."""
    return (LEGACY, NEW) if (round_no + question_no) % 2 == 0 else (NEW, LEGACY)


def fingerprint(rows: Sequence[Sequence[Any]]) -> str:
    """The answer, order aside: its first two columns (ids, or a group and its count)."""
    keys = sorted(repr(tuple(str(v) for v in row[:2])) for row in rows)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def measure(
    questions: Sequence[Question],
    sides: Mapping[str, Side],
    params: dict[str, Any],
    runs: int,
) -> list[Answered]:
    """Every question ``runs`` times on each side that answers it, interleaved."""
    asked: list[tuple[Question, list[str]]] = []
    out: dict[str, Answered] = {}
    for q in questions:
        reason = left_out(q, params)
        if reason is not None:
            out[q.name] = Answered(q.name, left_out=reason)
            continue
        who = [LEGACY, NEW] if not_compared(q) is None and LEGACY in sides else [NEW]
        asked.append((q, who))
    server: dict[tuple[str, str], list[float]] = {}
    client: dict[tuple[str, str], list[float]] = {}
    first: dict[tuple[str, str], tuple[int, tuple[str, ...], str]] = {}
    for round_no in range(-1, runs):  # round -1 warms the caches and records the answers
        for i, (q, who) in enumerate(asked):
            paired_no = sum(len(w) == 2 for _, w in asked[:i])
            for side in (s for s in order(round_no, paired_no) if s in who):
                sql = sides[side].sql(q)
                ms, _, indexes = sides[side].server(sql, params)
                c_ms, rows, digest = sides[side].client(sql, params)
                if round_no < 0:
                    first[q.name, side] = (rows, indexes, digest)
                    continue
                server.setdefault((q.name, side), []).append(ms)
                client.setdefault((q.name, side), []).append(c_ms)
    for q, who in asked:
        timed = {
            s: SideTiming(
                Spread.of(server[q.name, s]),
                Spread.of(client[q.name, s]),
                *first[q.name, s],
            )
            for s in who
        }
        out[q.name] = Answered(
            q.name, timed.get(LEGACY), timed.get(NEW), not_compared=not_compared(q)
        )
    return [out[q.name] for q in questions]


class TableSide:
    """A table on a connection of its own: ``side`` says which SQL it is asked."""

    def __init__(self, conn: psycopg.Connection[Any], side: str, table: str) -> None:
        self.conn, self.side, self.table = conn, side, table

    def sql(self, question: Question) -> str:
        return render(question, self.side, self.table)

    def server(self, sql: str, params: dict[str, Any]) -> tuple[float, int, tuple[str, ...]]:
        with mapped_errors(f"explain a question on {self.table}"):
            row = self.conn.execute(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {sql}", params)
            (explained,) = row.fetchone() or ([],)
        return server_ms(explained), actual_rows(explained), index_names(explained)

    def client(self, sql: str, params: dict[str, Any]) -> tuple[float, int, str]:
        with mapped_errors(f"ask a question of {self.table}"):
            started = time.perf_counter()
            rows = self.conn.execute(sql, params).fetchall()
            ms = (time.perf_counter() - started) * 1000
        return ms, len(rows), fingerprint(rows)
