"""Measurements on a scratch copy of the new table: never on the live table.

A temporary table (``pg_temp``, this session only, dropped when it ends) holds a copy of
every row of the new table, freshly packed; on it:

* the plan's indexes, built afresh from the live table's definitions: their size as a
  fresh build has it (a table filled by the stream grows its indexes page by page),
  and each question's server time with them: the baseline of the advice;
* each advice candidate (:mod:`replicator.assess.advice`), applied inside a transaction
  that is rolled back: the bytes it saves or costs and each question's server time;
* the columns in the best order, without any index: the storage floor (the smallest
  heap the plan's columns, types and mapping can have), then with the plan's indexes:
  the column-order advice.

Server times are ``EXPLAIN (ANALYZE, TIMING OFF)`` medians, as on the live tables; the
baseline and the variants run one after the other, so a difference within the two
interquartile ranges is reported as no measurable change.  The session's
``temp_buffers`` is raised to hold the copy (temporary tables live in local buffers).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from replicator.assess.advice import Advice, Candidate, Effect
from replicator.assess.questions import NEW, Question, quote
from replicator.assess.stats import Spread
from replicator.assess.storage import IndexFacts
from replicator.assess.timing import TableSide
from replicator.db.connect import mapped_errors

COPY = "replicator_assess_copy"
ORDERED = "replicator_assess_ordered"
_SIZE = (
    "SELECT pg_relation_size(c.oid, 'main'), coalesce(pg_total_relation_size(c.reltoastrelid), 0)"
    " FROM pg_class c WHERE c.oid = to_regclass(%s)"
)


@dataclass(frozen=True, slots=True)
class Scratch:
    measured: bool
    reason: str | None = None
    rows: int = 0
    heap_bytes: int = 0  # the copy: freshly packed, the live column order
    toast_bytes: int = 0
    fresh_indexes: dict[str, int] = field(default_factory=dict)  # live name -> fresh bytes
    floor_heap_bytes: int = 0  # the best column order, no index
    floor_toast_bytes: int = 0
    column_order: tuple[str, ...] = ()
    baseline: dict[str, Spread] = field(default_factory=dict)  # question -> server time
    advice: tuple[Advice, ...] = ()

    def best_ms(self, question: str) -> float | None:
        """The question's lowest server median over the copy's index sets."""
        found = [s.median_ms for s in self._spreads(question)]
        return min(found) if found else None

    def _spreads(self, question: str) -> Iterator[Spread]:
        if question in self.baseline:
            yield self.baseline[question]
        for advice in self.advice:
            yield from (e.after for e in advice.effects if e.name == question)


def copy_definition(definition: str, table: str, name: str) -> str:
    """Pure. A live index's ``pg_get_indexdef`` made for ``table`` under ``name``."""
    found = re.match(r"CREATE (UNIQUE )?INDEX \S+ ON (ONLY )?\S+ ", definition)
    if found is None:
        raise ValueError(f"unexpected index definition: {definition}")
    head = f"CREATE {found.group(1) or ''}INDEX {quote(name)} ON {quote(table)} "
    return head + definition[found.end() :]


def execute(conn: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()) -> Any:
    with mapped_errors("measure on a scratch copy"):
        return conn.execute(sql, params)


def _size(conn: psycopg.Connection[Any], table: str) -> tuple[int, int]:
    heap, toast = execute(conn, _SIZE, [quote(table)]).fetchone() or (0, 0)
    return int(heap), int(toast)


def _index_sizes(conn: psycopg.Connection[Any], names: dict[str, str]) -> dict[str, int]:
    """``live name -> bytes`` of the copies named in ``names`` (live -> copy)."""
    out = {}
    for live, copy in names.items():
        (size,) = execute(
            conn, "SELECT pg_relation_size(to_regclass(%s))", [quote(copy)]
        ).fetchone()
        out[live] = int(size or 0)
    return out


def _build_indexes(
    conn: psycopg.Connection[Any], table: str, indexes: Sequence[IndexFacts], tag: str
) -> dict[str, str]:
    names = {i.name: f"{tag}{n}" for n, i in enumerate(indexes)}
    for i in indexes:
        execute(conn, copy_definition(i.definition, table, names[i.name]))
    return names


def times(
    conn: psycopg.Connection[Any],
    table: str,
    questions: Sequence[Question],
    params: dict[str, Any],
    runs: int,
    side_name: str = NEW,
) -> dict[str, Spread]:
    """Each question's server time on ``table``: one warm run, then ``runs``."""
    side = TableSide(conn, side_name, table)
    out = {}
    for q in questions:
        sql = side.sql(q)
        side.server(sql, params)  # warm
        out[q.name] = Spread.of([side.server(sql, params)[0] for _ in range(runs)])
    return out


@contextmanager
def _rolled_back(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A transaction that is always rolled back: the copy is as it was after it."""
    with mapped_errors("measure on a scratch copy"), conn.transaction():
        yield
        raise psycopg.Rollback()


def _effects(before: dict[str, Spread], after: dict[str, Spread]) -> tuple[Effect, ...]:
    return tuple(Effect(name, before[name], after[name]) for name in before)


def _advice(candidate: Candidate, live_table: str, saved: int, rows: int, effects: Any) -> Advice:
    return Advice(
        candidate.kind,
        candidate.title,
        candidate.reason,
        candidate.statements(live_table),
        saved,
        round(saved / rows, 2) if rows else 0.0,
        effects,
    )


def _try_indexes(
    conn: psycopg.Connection[Any],
    candidate: Candidate,
    copies: dict[str, str],
    fresh: dict[str, int],
    asked: tuple[Sequence[Question], dict[str, Any], int],
) -> tuple[int, dict[str, Spread]]:
    """Bytes changed and the questions' times with ``candidate``'s index set, rolled back."""
    with _rolled_back(conn):
        for name in candidate.drop:
            execute(conn, f"DROP INDEX {quote(copies[name])}")
        added = {}
        for n, (_, body) in enumerate(candidate.create):
            added[f"new {n}"] = f"{COPY}_new_{n}"
            execute(conn, f"CREATE INDEX {quote(added[f'new {n}'])} ON {quote(COPY)} {body}")
        grown = sum(_index_sizes(conn, added).values())
        after = times(conn, COPY, *asked)
    return grown - sum(fresh[n] for n in candidate.drop), after


@dataclass(frozen=True, slots=True)
class Copy:
    """A temporary copy of the new table with the plan's indexes, freshly built."""

    rows: int
    heap_bytes: int
    toast_bytes: int
    copies: dict[str, str]  # live index name -> its copy's name
    fresh: dict[str, int]  # live index name -> bytes, freshly built


def copy_table(
    conn: psycopg.Connection[Any],
    table: str,
    name: str,
    indexes: Sequence[IndexFacts],
    columns: Sequence[str] = (),
) -> Copy:
    """``CREATE TEMP TABLE name AS SELECT ... FROM table``, ``indexes`` built on it, then
    VACUUM ANALYZE (its visibility map and statistics, as a settled table has them)."""
    cols = ", ".join(quote(c) for c in columns) if columns else "*"
    execute(conn, f"CREATE TEMP TABLE {quote(name)} AS SELECT {cols} FROM {quote(table)}")
    (rows,) = execute(conn, f"SELECT count(*) FROM {quote(name)}").fetchone() or (0,)
    heap, toast = _size(conn, name)
    copies = _build_indexes(conn, name, indexes, f"{name}_i")
    execute(conn, f"VACUUM ANALYZE {quote(name)}")
    return Copy(int(rows), heap, toast, copies, _index_sizes(conn, copies))


def prepare(
    conn: psycopg.Connection[Any], table: str, indexes: Sequence[IndexFacts], buffers_kb: int
) -> Copy:
    """The session's local buffers raised to ``buffers_kb``, then the copy of ``table``."""
    execute(conn, f"SET temp_buffers = '{buffers_kb}kB'")
    return copy_table(conn, table, COPY, indexes)


def advise(
    conn: psycopg.Connection[Any],
    live: tuple[str, Sequence[IndexFacts]],
    base: Copy,
    asked: tuple[Sequence[Question], dict[str, Any], int],
    candidates: Sequence[Candidate],
) -> Scratch:
    """The baseline, each candidate and the floor on the copy (:func:`prepare`), which is
    dropped when done (``live``: the new table and its indexes; ``asked``: questions,
    parameters, runs)."""
    table, indexes = live
    baseline = times(conn, COPY, *asked)
    advice: list[Advice] = []
    order: tuple[str, ...] = ()
    for c in candidates:
        if c.column_order:
            order = c.column_order
            continue
        changed, after = _try_indexes(conn, c, base.copies, base.fresh, asked)
        advice.append(_advice(c, table, changed, base.rows, _effects(baseline, after)))
    floor = copy_table(conn, COPY, ORDERED, (), order)
    if order:
        with _rolled_back(conn):
            built = _index_sizes(conn, _build_indexes(conn, ORDERED, indexes, "rao"))
            execute(conn, f"ANALYZE {quote(ORDERED)}")
            grown = sum(built.values()) - sum(base.fresh.values())
            changed = grown + floor.heap_bytes + floor.toast_bytes - base.heap_bytes
            changed -= base.toast_bytes
            after = times(conn, ORDERED, *asked)
        c = next(c for c in candidates if c.column_order)
        advice.append(_advice(c, table, changed, base.rows, _effects(baseline, after)))
    for name in (ORDERED, COPY):
        execute(conn, f"DROP TABLE {quote(name)}")
    return Scratch(
        True, None, base.rows, base.heap_bytes, base.toast_bytes, base.fresh, floor.heap_bytes,
        floor.toast_bytes, order, baseline, tuple(advice),
    )  # fmt: skip
