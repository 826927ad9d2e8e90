"""Advice to try on the new table, chosen from what was measured (pure).

Each candidate is a change of the index set or of the column order; the scratch copy
(:mod:`replicator.assess.scratch`) measures its effect on size and on every question
before anything is advised, and nothing is ever applied to the live table: the
statements are for the user to run.

* unused indexes: no question scanned them over the measuring window (``idx_scan`` 0;
  the count since the statistics were reset is shown beside it, for the application's
  own use);
* redundant indexes: a plain index whose columns lead another's (``(created_at)`` and
  ``(created_at, completed_at)``);
* partial indexes for the hot statuses: the statuses the workload asks about, an index
  on status replaced by one over the rest of its columns restricted to them;
* column order: fixed-width columns first, widest alignment first, then the variable
  ones, so no padding is spent between them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from replicator.assess.questions import quote
from replicator.assess.stats import Spread, faster
from replicator.assess.storage import IndexFacts

_ALIGN = {"d": 8, "i": 4, "s": 2, "c": 1}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    length: int  # pg_type.typlen: -1 variable
    align: str  # pg_type.typalign


@dataclass(frozen=True, slots=True)
class Candidate:
    kind: str  # unused_indexes | redundant_indexes | partial_hot_statuses | column_order
    title: str
    reason: str
    drop: tuple[str, ...] = ()  # index names
    create: tuple[tuple[str, str], ...] = ()  # (name suffix, "(columns) WHERE ...")
    column_order: tuple[str, ...] = ()

    def statements(self, table: str) -> tuple[str, ...]:
        """The DDL for the live table (for the user to run; never run by ``assess``)."""
        out = [f"DROP INDEX CONCURRENTLY {quote(n)};" for n in self.drop]
        out += [
            f"CREATE INDEX CONCURRENTLY {quote(f'{table}_{suffix}')} ON {quote(table)} {body};"
            for suffix, body in self.create
        ]
        if self.column_order:
            out.append(
                f"-- rebuild {table} with its columns in this order: {', '.join(self.column_order)}"
            )
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Effect:
    """One question's server time on the copy, before and after the change."""

    name: str
    before: Spread
    after: Spread

    @property
    def change(self) -> str:
        if self.before.overlaps(self.after):
            return "no measurable change"
        return faster(self.before.median_ms, self.after.median_ms)


@dataclass(frozen=True, slots=True)
class Advice:
    kind: str
    title: str
    reason: str
    statements: tuple[str, ...]
    bytes_change: int  # heap and indexes on the copy, after less before (negative: saved)
    per_row_change: float
    effects: tuple[Effect, ...]
    applied: bool = False


def unused(indexes: Sequence[IndexFacts]) -> Candidate | None:
    idle = [i for i in indexes if not i.unique and i.idx_scan_window == 0]
    if not idle:
        return None
    return Candidate(
        "unused_indexes",
        f"drop the {len(idle)} indexes the questions never used",
        "idx_scan over the measuring window (since the statistics were reset): "
        + ", ".join(f"{i.name} 0 ({i.idx_scan_total})" for i in idle),
        drop=tuple(i.name for i in idle),
    )


def redundant(indexes: Sequence[IndexFacts]) -> Candidate | None:
    plain = [i for i in indexes if i.plain and not i.unique]
    pairs = [
        (a, b)
        for a in plain
        for b in plain
        if len(b.columns) > len(a.columns) and b.columns[: len(a.columns)] == a.columns
    ]
    led = {a.name: b.name for a, b in pairs}
    if not led:
        return None
    return Candidate(
        "redundant_indexes",
        f"drop the {len(led)} indexes that lead another",
        "; ".join(f"{a} is the leading part of {b}" for a, b in sorted(led.items())),
        drop=tuple(sorted(led)),
    )


def partial_hot(indexes: Sequence[IndexFacts], hot: Sequence[str]) -> Candidate | None:
    on_status = [i for i in indexes if i.plain and not i.unique and "status" in i.columns]
    if not hot or not on_status:
        return None
    where = "status IN (" + ", ".join("'" + s.replace("'", "''") + "'" for s in hot) + ")"
    create = []
    for i in on_status:
        rest = tuple(c for c in i.columns if c != "status") or ("status",)
        create.append((f"{'_'.join(rest)}_hot", f"({', '.join(rest)}) WHERE {where}"))
    return Candidate(
        "partial_hot_statuses",
        f"partial indexes for the hot statuses ({', '.join(hot)})",
        f"the questions ask for {where}; each index on status becomes one over its other"
        " columns, restricted to those rows",
        drop=tuple(i.name for i in on_status),
        create=tuple(dict.fromkeys(create)),
    )


def best_order(columns: Sequence[Column]) -> tuple[str, ...]:
    """Fixed-width columns by alignment, widest first, then the variable-width ones (each
    group in its own order)."""
    fixed = sorted((c for c in columns if c.length > 0), key=lambda c: -_ALIGN.get(c.align, 1))
    return tuple(c.name for c in [*fixed, *(c for c in columns if c.length <= 0)])


def column_order(columns: Sequence[Column]) -> Candidate | None:
    best = best_order(columns)
    if best == tuple(c.name for c in columns):
        return None
    return Candidate(
        "column_order",
        "reorder the columns: fixed-width first, widest alignment first",
        "no alignment padding between columns (a table rewrite: the order is fixed at"
        " CREATE TABLE)",
        column_order=best,
    )


def candidates(
    indexes: Sequence[IndexFacts], hot: Sequence[str], columns: Sequence[Column]
) -> list[Candidate]:
    found = [unused(indexes), redundant(indexes), partial_hot(indexes, hot), column_order(columns)]
    return [c for c in found if c is not None]
