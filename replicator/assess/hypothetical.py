"""The equal-index comparison: the legacy questions planned with the new table's
indexes, as hypothetical indexes (HypoPG), nothing built.

It separates what the new shape costs (the new table against the legacy table with the
same indexes) from what the new indexes buy (the legacy table with them against the
legacy table as it is).  HypoPG's indexes exist only for plain ``EXPLAIN`` in the
session that made them, so these figures are the planner's estimated costs (its
units, not milliseconds), the new table's included, for a like-for-like comparison.

Each new index is translated through the mapping: ``status`` becomes the expression
``(COALESCE(status, 'pending'))``, ``workflow_type`` the column ``workflow_name``.  An
index on a column the legacy table lacks (``user_id``, ``priority``: constants of the
mapping) or one the legacy table already has (its primary key) is listed with the
reason it is not made.  Where the extension is not installed, the comparison is "not
measured" and says how to get it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from replicator.assess.plans import index_names, total_cost
from replicator.assess.questions import LEGACY, NEW, Question, legacy_expression, quote, render
from replicator.assess.storage import IndexFacts
from replicator.db.connect import mapped_errors
from replicator.mapping.columns import NEW_COLUMN_DEFAULTS

METHOD = "estimated planner cost (EXPLAIN without ANALYZE; HypoPG hypothetical indexes)"
MISSING = (
    "not measured: the hypopg extension is not installed in the legacy table's database"
    " (Debian: apt-get install postgresql-15-hypopg; then, as a superuser,"
    " CREATE EXTENSION hypopg)"
)


@dataclass(frozen=True, slots=True)
class Translated:
    new_index: str
    legacy_columns: str | None  # "(a, (expr))"; None: not made (``skipped`` says why)
    skipped: str | None = None

    def definition(self, table: str) -> str | None:
        if self.legacy_columns is None:
            return None
        return f"CREATE INDEX ON {quote(table)} {self.legacy_columns}"


@dataclass(frozen=True, slots=True)
class EqualCost:
    name: str
    legacy_cost: float  # the legacy table with its own indexes
    legacy_equal_cost: float  # with the new table's indexes, hypothetical
    new_cost: float
    legacy_equal_indexes: tuple[str, ...]  # the new indexes the legacy plan would use


@dataclass(frozen=True, slots=True)
class EqualIndexes:
    measured: bool
    reason: str | None = None
    indexes: tuple[Translated, ...] = ()
    questions: tuple[EqualCost, ...] = ()
    method: str = METHOD

    def _sum(self, field: str) -> float:
        return float(sum(getattr(q, field) for q in self.questions))

    @property
    def shape_cost(self) -> float | None:
        """The new table's cost over the legacy table's with the same indexes, less 1."""
        equal = self._sum("legacy_equal_cost")
        return round(self._sum("new_cost") / equal - 1, 4) if equal > 0 else None

    @property
    def indexes_buy(self) -> float | None:
        """The share of the legacy table's cost the new indexes take away."""
        own = self._sum("legacy_cost")
        return round(1 - self._sum("legacy_equal_cost") / own, 4) if own > 0 else None


def _legacy_term(column: str) -> str:
    expr = legacy_expression(column)
    return expr if re.fullmatch(r"[a-z_][a-z0-9_]*", expr) else f"({expr})"


def _sql_value(value: object) -> str:
    return "NULL" if value is None else "'" + str(value).replace("'", "''") + "'"


def translate(index: IndexFacts, legacy: Sequence[IndexFacts]) -> Translated:
    """Pure. The legacy table's version of a new index, or why there is none."""
    if not index.plain:
        return Translated(index.name, None, "an expression or partial index: not translated")
    absent = [c for c in index.columns if c in NEW_COLUMN_DEFAULTS]
    if absent:
        c = absent[0]
        return Translated(
            index.name,
            None,
            f"{c} has no legacy column (the mapping writes"
            f" {_sql_value(NEW_COLUMN_DEFAULTS[c])} into every row)",
        )
    terms = tuple(_legacy_term(c) for c in index.columns)
    for have in legacy:
        if have.plain and have.columns == terms:
            return Translated(index.name, None, f"the legacy table has it ({have.name})")
    return Translated(index.name, f"({', '.join(terms)})")


def _explain(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> Any:
    with mapped_errors("explain a question"):
        (explained,) = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchone() or ([],)
    return explained


def installed(conn: psycopg.Connection[Any]) -> bool:
    with mapped_errors("look for the hypopg extension"):
        return (
            conn.execute("SELECT FROM pg_extension WHERE extname = 'hypopg'").fetchone() is not None
        )


def compare(
    legacy_conn: psycopg.Connection[Any],
    new_conn: psycopg.Connection[Any],
    questions: Sequence[Question],
    params: dict[str, Any],
    tables: tuple[str, str],
    indexes: tuple[Sequence[IndexFacts], Sequence[IndexFacts]],
) -> EqualIndexes:
    """The comparison on the legacy table's own session (``tables``/``indexes``: legacy,
    new); the hypothetical indexes are gone when it returns."""
    legacy_table, new_table = tables
    translated = tuple(translate(i, indexes[0]) for i in indexes[1])
    if not installed(legacy_conn):
        return EqualIndexes(False, MISSING, translated)
    own = {
        q.name: _explain(legacy_conn, render(q, LEGACY, legacy_table), params) for q in questions
    }
    hypothetical: dict[str, str] = {}
    try:
        for t in translated:
            definition = t.definition(legacy_table)
            if definition is not None:
                with mapped_errors("create a hypothetical index"):
                    cur = legacy_conn.execute(
                        "SELECT indexname FROM hypopg_create_index(%s)", [definition]
                    )
                    hypothetical.update({str(r[0]): t.new_index for r in cur})
        equal = {
            q.name: _explain(legacy_conn, render(q, LEGACY, legacy_table), params)
            for q in questions
        }
    finally:
        with mapped_errors("drop the hypothetical indexes"):
            legacy_conn.execute("SELECT hypopg_reset()")
    costs = tuple(
        EqualCost(
            q.name,
            total_cost(own[q.name]),
            total_cost(equal[q.name]),
            total_cost(_explain(new_conn, render(q, NEW, new_table), params)),
            tuple(hypothetical.get(n, n) for n in index_names(equal[q.name])),
        )
        for q in questions
    )
    return EqualIndexes(True, None, translated, costs)
