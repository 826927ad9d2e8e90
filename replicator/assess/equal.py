"""The equal-index comparison measured: real indexes on temporary copies.

HypoPG's hypothetical indexes (:mod:`replicator.assess.hypothetical`) have no
statistics, so an index on an expression (the legacy side of ``status``,
``COALESCE(status, 'pending')``) is planned with the planner's default guesses, and the
estimate can be far off.  Measured instead: a temporary copy of the legacy table with
its own indexes, its questions timed; then the new table's indexes, translated, built
on it and ANALYZEd (the expressions get real statistics); then its questions
interleaved with the new table's copy (:func:`replicator.assess.scratch.prepare`, the
plan's indexes), both freshly packed and in local buffers alike.  Server time
(EXPLAIN ANALYZE medians).  Nothing is built on the live tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.assess.hypothetical import Translated
from replicator.assess.questions import LEGACY, NEW, Question, quote
from replicator.assess.scratch import COPY, copy_table, execute, times
from replicator.assess.stats import Spread
from replicator.assess.storage import IndexFacts
from replicator.assess.timing import TableSide, measure

LEGACY_COPY = "replicator_assess_legacy"
METHOD = (
    "server time (EXPLAIN ANALYZE medians) on temporary copies of both tables with real"
    " indexes, ANALYZEd; the legacy copy and the new copy interleaved"
)


@dataclass(frozen=True, slots=True)
class EqualTimes:
    name: str
    legacy_own: Spread  # the legacy copy with its own indexes
    legacy_equal: Spread  # with the new table's indexes, translated
    new: Spread  # the new table's copy with the plan's indexes
    legacy_equal_indexes: tuple[str, ...]  # the new indexes its plan read through


@dataclass(frozen=True, slots=True)
class EqualMeasured:
    measured: bool
    reason: str | None = None
    questions: tuple[EqualTimes, ...] = ()
    method: str = METHOD

    def _sum(self, field: str) -> float:
        return float(sum(getattr(q, field).median_ms for q in self.questions))

    @property
    def shape_cost(self) -> float | None:
        """The new table's time over the legacy table's with the same indexes, less 1."""
        equal = self._sum("legacy_equal")
        return round(self._sum("new") / equal - 1, 4) if equal > 0 else None

    @property
    def indexes_buy(self) -> float | None:
        """The share of the legacy table's time the new indexes take away."""
        own = self._sum("legacy_own")
        return round(1 - self._sum("legacy_equal") / own, 4) if own > 0 else None


def measure_equal(
    legacy_conn: psycopg.Connection[Any],
    new_conn: psycopg.Connection[Any],
    legacy: tuple[str, Sequence[IndexFacts], Sequence[Translated]],
    asked: tuple[Sequence[Question], dict[str, Any], int],
    buffers_kb: int,
) -> EqualMeasured:
    """The module's comparison (``legacy``: the legacy table, its indexes, the new ones
    translated; ``asked``: the paired questions, parameters, runs).  ``new_conn`` holds
    the new table's copy; ``legacy_conn`` is a session of its own."""
    table, own_indexes, translated = legacy
    questions, params, runs = asked
    execute(legacy_conn, f"SET temp_buffers = '{buffers_kb}kB'")
    built = copy_table(legacy_conn, table, LEGACY_COPY, own_indexes)
    own = times(legacy_conn, LEGACY_COPY, questions, params, runs, LEGACY)
    names = {copy: live for live, copy in built.copies.items()}  # copy -> the name reported
    for n, t in enumerate(translated):
        if t.legacy_columns is not None:
            names[f"{LEGACY_COPY}_e{n}"] = t.new_index
            index = quote(f"{LEGACY_COPY}_e{n}")
            execute(legacy_conn, f"CREATE INDEX {index} ON {quote(LEGACY_COPY)} {t.legacy_columns}")
    execute(legacy_conn, f"ANALYZE {quote(LEGACY_COPY)}")
    sides = {
        LEGACY: TableSide(legacy_conn, LEGACY, LEGACY_COPY),
        NEW: TableSide(new_conn, NEW, COPY),
    }
    answered = measure(questions, sides, params, runs)
    execute(legacy_conn, f"DROP TABLE {quote(LEGACY_COPY)}")
    return EqualMeasured(
        True,
        None,
        tuple(
            EqualTimes(
                a.name,
                own[a.name],
                a.legacy.server,
                a.new.server,
                tuple(names.get(i, i) for i in a.legacy.indexes),
            )
            for a in answered
            if a.legacy is not None and a.new is not None
        ),
    )
