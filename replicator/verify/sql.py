"""The SQL of ``replicator verify``, pure: it composes statements and plans, runs nothing.

Chunks are ranges of the primary key in ``COLLATE "C"`` order (byte order, the same in
every database whatever its default collation): chunk 0 holds the ids below the first
boundary, chunk ``i`` those from boundary ``i`` (inclusive) to ``i + 1`` (exclusive), the
last chunk everything above, so a row inserted after planning still has a chunk.  Both
databases assign a row to its chunk with ``width_bucket(id COLLATE "C", boundaries)``, in
one scan per table.

A chunk's checksum is ``count(*)`` and the sum of a 64-bit hash of every row, computed
inside each database.  The hash is ``hash_record_extended(ROW(...), 0)`` over the 22
target columns -- in the source over the mapping written in SQL -- with the same types
on both sides: it hashes each value with its type's hash function, so no value is turned
into text except the JSON columns, whose exact text is what the mapping defines.  The
sums are order-independent, so a table is read in any order, in slices of blocks
(``ctid`` ranges, PostgreSQL 14+), and slice results add up.

The source expressions only have to agree with :func:`replicator.mapping.rows.map_to_tuple`
on rows that map; they do exactly for the JSON text (``to_json(text)`` escapes like
Python's ``encode_basestring``) and for ``total_cost`` (see :mod:`replicator.mapping.sql`
for why ``round(total_cost::text::numeric, 4)`` is exact).  A chunk whose checksums differ gets
a row-level diff in Python, which is the only thing that reports anything: a checksum
can cost an extra diff, never a false report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from psycopg import sql

from replicator.mapping.columns import SOURCE_COLUMNS, SOURCE_TABLE, TARGET_COLUMNS
from replicator.mapping.sql import MAPPED

JSON_COLUMNS = frozenset(
    ("result_data", "error_details", "tags", "metadata", "progress_data", "resource_usage")
)

q = sql.SQL


#: target column -> the mapped value over the source row ``p``, typed like the target
#: column's hash input: backfill's SQL mapping, JSON columns as their exact text (a
#: ``json`` value keeps its input text verbatim, so ``::json::text`` changes nothing).
SOURCE_EXPRESSIONS: dict[str, sql.Composable] = {
    name: q("({})::text").format(expr) if name in JSON_COLUMNS else expr
    for name, expr in MAPPED.items()
}
#: target column -> its value over the target row ``t`` (JSON columns as their text).
TARGET_EXPRESSIONS: dict[str, sql.Composable] = {
    name: q("t.{}::text" if name in JSON_COLUMNS else "t.{}").format(sql.Identifier(name))
    for name in TARGET_COLUMNS
}
if tuple(SOURCE_EXPRESSIONS) != TARGET_COLUMNS:  # pragma: no cover - guards a mapping change
    raise ImportError("verify_sql.SOURCE_EXPRESSIONS does not follow mapping.TARGET_COLUMNS")


@dataclass(frozen=True, slots=True)
class Side:
    """One table being compared: where it is, its key column and its row hash."""

    name: str  # "source" or "target"
    table: str
    alias: str
    key: str
    expressions: tuple[sql.Composable, ...]
    columns: tuple[str, ...]  # what the row-level diff reads

    @property
    def relation(self) -> sql.Composable:
        return q("{} AS {}").format(sql.Identifier(self.table), sql.Identifier(self.alias))

    @property
    def key_c(self) -> sql.Composable:
        return q('{}.{} COLLATE "C"').format(sql.Identifier(self.alias), sql.Identifier(self.key))


def source_side(table: str = SOURCE_TABLE) -> Side:
    return Side("source", table, "p", "id", tuple(SOURCE_EXPRESSIONS.values()), SOURCE_COLUMNS)


def target_side(table: str) -> Side:
    return Side("target", table, "t", "run_id", tuple(TARGET_EXPRESSIONS.values()), TARGET_COLUMNS)


def row_hash(side: Side) -> sql.Composable:
    return q("hash_record_extended(ROW({}), 0)").format(q(", ").join(side.expressions))


def chunk_of(side: Side) -> sql.Composable:
    """The row's chunk number, given the boundaries as the first parameter."""
    return q("width_bucket({}, %(bounds)s::text[])").format(side.key_c)


def count_rows(side: Side) -> sql.Composed:
    return q("SELECT count(*) FROM {}").format(side.relation)


def boundary_fractions(rows: int, chunk_rows: int) -> list[float]:
    """Pure. The quantiles that split ``rows`` rows into chunks of about ``chunk_rows``."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    chunks = max(1, -(-rows // chunk_rows))
    return [i / chunks for i in range(1, chunks)]


def plan_boundaries(side: Side) -> sql.Composed:
    """The ids at the given quantiles (``%(fractions)s``), in ``COLLATE "C"`` order."""
    return q(
        "SELECT percentile_disc(%(fractions)s::float8[]) WITHIN GROUP (ORDER BY {key}) FROM {rel}"
    ).format(key=side.key_c, rel=side.relation)


def distinct_sorted(boundaries: Iterable[str | None]) -> list[str]:
    """Pure. Boundaries as ``width_bucket`` needs them: no NULLs, no repeats, in the
    order the database gave (already ``COLLATE "C"`` ascending)."""
    out: list[str] = []
    for b in boundaries:
        if b is not None and (not out or out[-1] != b):
            out.append(b)
    return out


#: ``ctid`` upper bound of the last slice: past any block a table can have.
END_OF_TABLE = "(4294967295,0)"


def checksums(side: Side, sliced: bool) -> sql.Composed:
    """Per chunk: (chunk, rows, sum of row hashes); with ``sliced``, only over the rows
    with ``%(first)s <= ctid < %(last)s`` (tids, see :func:`block_slices`)."""
    where: sql.Composable = q("")
    if sliced:
        where = q(" WHERE {a}.ctid >= %(first)s::tid AND {a}.ctid < %(last)s::tid").format(
            a=sql.Identifier(side.alias)
        )
    return q("SELECT {chunk} AS chunk, count(*), sum({hash}) FROM {rel}{where} GROUP BY 1").format(
        chunk=chunk_of(side), hash=row_hash(side), rel=side.relation, where=where
    )


def block_slices(blocks: int, slice_blocks: int) -> list[tuple[str, str]]:
    """Pure. ``[first, last)`` ctid ranges of ``slice_blocks`` blocks covering a table of
    ``blocks`` blocks; the last one reaches past any block, so that blocks added
    meanwhile are read too."""
    if slice_blocks < 1:
        raise ValueError("slice_blocks must be at least 1")
    starts = list(range(0, max(blocks, 1), slice_blocks))
    ends = [f"({start},0)" for start in starts[1:]] + [END_OF_TABLE]
    return [(f"({start},0)", end) for start, end in zip(starts, ends, strict=True)]


def relation_blocks() -> str:
    """The size of ``%s`` (a regclass text) in blocks, and the server version number."""
    return (
        "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::bigint,"
        " current_setting('server_version_num')::int"
    )


def row_hashes(side: Side) -> sql.Composed:
    """(chunk, key, row hash) of the rows of the chunks ``%(chunks)s``, grouped by chunk:
    narrows a differing chunk down to the keys whose rows to compare."""
    return q(
        "SELECT {chunk} AS chunk, {a}.{k}, {hash} FROM {rel}"
        " WHERE {chunk} = ANY(%(chunks)s) ORDER BY 1"
    ).format(
        chunk=chunk_of(side),
        a=sql.Identifier(side.alias),
        k=sql.Identifier(side.key),
        hash=row_hash(side),
        rel=side.relation,
    )


def rows_by_key(side: Side) -> sql.Composed:
    """The rows whose key is one of ``%(keys)s``."""
    return q("SELECT {cols} FROM {rel} WHERE {a}.{k} = ANY(%(keys)s::text[])").format(
        cols=_columns(side),
        rel=side.relation,
        a=sql.Identifier(side.alias),
        k=sql.Identifier(side.key),
    )


def versions_by_key(versions_table: str) -> sql.Composed:
    """The order guard's entries of ``%(keys)s``: (run_id, source_lsn, deleted)."""
    return q(
        "SELECT run_id, source_lsn, deleted FROM {} WHERE run_id = ANY(%(keys)s::text[])"
    ).format(sql.Identifier(versions_table))


def _columns(side: Side) -> sql.Composable:
    a = sql.Identifier(side.alias)
    return q(", ").join(
        q("{}.{}::text" if side.name == "target" and c in JSON_COLUMNS else "{}.{}").format(
            a, sql.Identifier(c)
        )
        for c in side.columns
    )


def batches(items: Sequence[str], size: int) -> list[Sequence[str]]:
    """Pure. ``items`` in consecutive groups of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]
