"""Each table's storage by component (read-only).

* the heap (main fork) and its TOAST, per row;
* for the new table, the part of the heap the plan itself adds to every row: the
  defaults of its new columns (``tags``, ``metadata``, ``progress_data``,
  ``resource_usage``: ``'[]'``/``'{}'``; ``priority``: ``'normal'``) and the JSON
  wrapping of ``result`` and ``error_message`` (``{"result": ...}``, ``{}`` for NULL):
  each value's stored size, less the bare text it wraps (``pg_column_size``; the
  alignment padding between columns is not counted);
* each index: its size, and how often it was scanned (``idx_scan``) since the
  statistics were reset and within the measuring window.

The counters: a backend sends its statistics at most once a second;
:func:`flush_statistics` makes the measuring sessions send theirs before the window is
closed, so that the window holds every scan of the measurement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from replicator.assess.questions import quote
from replicator.db.connect import mapped_errors
from replicator.errors import ConfigurationError, ReplicatorError
from replicator.mapping.columns import JSON_WRAPPED, NEW_COLUMN_DEFAULTS, SOURCE_TO_TARGET

_SIZES = (
    "SELECT pg_relation_size(c.oid, 'main'),"
    " coalesce(pg_total_relation_size(c.reltoastrelid), 0)"
    " FROM pg_class c WHERE c.oid = to_regclass(%s)"
)
_INDEXES = """
    SELECT ic.relname, pg_get_indexdef(i.indexrelid), pg_relation_size(i.indexrelid),
           ARRAY(SELECT coalesce(a.attname, '')
                   FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                   LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                  WHERE k.n <= i.indnkeyatts ORDER BY k.n),
           i.indexprs IS NULL AND i.indpred IS NULL AND am.amname = 'btree',
           i.indisprimary, i.indisunique, coalesce(pg_stat_get_numscans(i.indexrelid), 0)
      FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
      JOIN pg_am am ON am.oid = ic.relam
     WHERE i.indrelid = to_regclass(%s) ORDER BY ic.relname"""
_SCANS = (
    "SELECT ic.relname, coalesce(pg_stat_get_numscans(i.indexrelid), 0)"
    " FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
    " WHERE i.indrelid = to_regclass(%s)"
)


@dataclass(frozen=True, slots=True)
class IndexFacts:
    name: str
    definition: str
    bytes: int
    columns: tuple[str, ...]  # key columns in order ('' for an expression)
    plain: bool  # a btree over plain columns, no predicate
    primary: bool
    unique: bool
    idx_scan_total: int  # since the statistics were reset
    idx_scan_window: int | None = None  # during the measurement


@dataclass(frozen=True, slots=True)
class TableStorage:
    table: str
    rows: int
    heap_bytes: int
    toast_bytes: int
    indexes: tuple[IndexFacts, ...] = ()
    plan_added: dict[str, int] | None = None  # component -> bytes over all rows

    @property
    def index_bytes(self) -> int:
        return sum(i.bytes for i in self.indexes)

    @property
    def total_bytes(self) -> int:
        return self.heap_bytes + self.toast_bytes + self.index_bytes

    def per_row(self, value: float) -> float | None:
        return round(value / self.rows, 2) if self.rows else None

    @property
    def bytes_per_row(self) -> float | None:
        return self.per_row(self.total_bytes)

    @property
    def plan_added_bytes(self) -> int:
        return sum((self.plan_added or {}).values())


def plan_added_sql(table: str) -> str:
    """Per component, the bytes the plan adds, summed over the rows of ``table``."""
    parts = [
        f"coalesce(sum(pg_column_size({c})), 0) AS {c}"
        for c, default in NEW_COLUMN_DEFAULTS.items()
        if default is not None
    ]
    for source, key in JSON_WRAPPED.items():
        c = SOURCE_TO_TARGET[source]
        bare = f"octet_length({c}->>'{key}')"
        parts.append(
            f"coalesce(sum(coalesce(pg_column_size({c}), 0) - coalesce({bare}"
            f" + CASE WHEN {bare} < 127 THEN 1 ELSE 4 END, 0)), 0) AS {c}_wrapping"
        )
    return f"SELECT {', '.join(parts)} FROM {quote(table)}"


def measure_table(conn: psycopg.Connection[Any], table: str, *, new: bool) -> TableStorage:
    """Rows, heap, TOAST and indexes of ``table``; the plan's additions when ``new``."""
    with mapped_errors(f"measure {table}"):
        sizes = conn.execute(_SIZES, [quote(table)]).fetchone()
        if sizes is None or sizes[0] is None:
            raise ConfigurationError(f"table {table} does not exist")
        (rows,) = conn.execute(f"SELECT count(*) FROM {quote(table)}").fetchone() or (0,)
        indexes = tuple(
            IndexFacts(name, definition, int(size), tuple(cols), plain, primary, unique, scans)
            for name, definition, size, cols, plain, primary, unique, scans in conn.execute(
                _INDEXES, [quote(table)]
            )
        )
        added = None
        if new:
            cur = conn.execute(plan_added_sql(table))
            row = cur.fetchone() or ()
            added = {d.name: int(v) for d, v in zip(cur.description or [], row, strict=True)}
    return TableStorage(table, int(rows), int(sizes[0]), int(sizes[1]), indexes, added)


def scans(conn: psycopg.Connection[Any], table: str) -> dict[str, int]:
    """``idx_scan`` of each index of ``table``, as the statistics hold it now."""
    with mapped_errors(f"read the index statistics of {table}"):
        return {n: int(s) for n, s in conn.execute(_SCANS, [quote(table)])}


def with_window(storage: TableStorage, before: dict[str, int]) -> TableStorage:
    """``storage`` with each index's scans since ``before`` (its counters then)."""
    return replace(
        storage,
        indexes=tuple(
            replace(i, idx_scan_window=i.idx_scan_total - before.get(i.name, 0))
            for i in storage.indexes
        ),
    )


def flush_statistics(conn: psycopg.Connection[Any]) -> None:
    """Make this session send its pending statistics now (PostgreSQL 15+), or else wait
    out the one-second interval and end a statement, which sends them."""
    try:
        with mapped_errors("flush the statistics"):
            conn.execute("SELECT pg_stat_force_next_flush()")
    except ReplicatorError:
        time.sleep(1.1)
        with mapped_errors("flush the statistics"):
            conn.execute("SELECT 1")
