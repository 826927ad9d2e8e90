"""The SQL of ``replicator backfill``: chunk planning, the per-chunk statements and the
chunk state.  Pure: it composes statements, runs nothing.  The mapping in SQL they use
is :mod:`replicator.mapping.sql`.

"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from psycopg import sql

from replicator.mapping.columns import SOURCE_COLUMNS, SOURCE_TYPES, TARGET_COLUMNS
from replicator.mapping.sql import MAPPED, problem, upsert_tail
from replicator.stream.apply import versions

CHUNKS_TABLE = "replicator_backfill_chunks"
REJECTS_TABLE = "replicator_backfill_rejects"
INDEXES_TABLE = "replicator_backfill_indexes"

q = sql.SQL


@dataclass(frozen=True, slots=True)
class Chunk:
    """Source rows with ``lower <= id < upper`` in ``COLLATE "C"`` order; None = unbounded."""

    number: int
    lower: str | None
    upper: str | None
    planned_rows: int


def plan_chunks(boundaries: Sequence[str], total_rows: int, chunk_rows: int) -> list[Chunk]:
    """Chunks from the ids that open chunks 2..n (ascending, ``COLLATE "C"``).

    The first chunk has no lower bound and the last none above, so rows inserted after
    planning, whatever their id, still belong to a chunk.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    if any(a >= b for a, b in pairwise(boundaries)):
        raise ValueError("chunk boundaries must be strictly ascending")
    edges: list[str | None] = [None, *boundaries, None]
    chunks = []
    for n, (lower, upper) in enumerate(pairwise(edges)):
        planned = max(0, min(chunk_rows, total_rows - n * chunk_rows))
        chunks.append(Chunk(n, lower, upper, planned))
    return chunks


def in_chunk(chunk: Chunk, alias: str = "p") -> sql.Composable:
    """The range predicate of ``chunk``; always ``COLLATE "C"``, whatever the databases'
    default collation, so that the plan means the same rows everywhere."""
    column = q('{}.id COLLATE "C"').format(sql.Identifier(alias))
    parts = []
    if chunk.lower is not None:
        parts.append(q("{} >= {}").format(column, sql.Literal(chunk.lower)))
    if chunk.upper is not None:
        parts.append(q("{} < {}").format(column, sql.Literal(chunk.upper)))
    return q(" AND ").join(parts) if parts else q("TRUE")


def plan_boundaries(source: sql.Composable, chunk_rows: int) -> sql.Composed:
    """The ids at rows ``chunk_rows + 1``, ``2 * chunk_rows + 1``... in ``COLLATE "C"`` order.

    Statements here carry their values as literals and are run without parameters
    (an id may hold ``%``)."""
    return q(
        'SELECT id COLLATE "C" FROM (SELECT id, row_number() OVER (ORDER BY id COLLATE "C") AS n'
        " FROM {source} p) s WHERE n > 1 AND mod(n - 1, {rows}) = 0 ORDER BY 1"
    ).format(source=source, rows=sql.Literal(chunk_rows))


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Names:
    """Identifiers the statements use (``source`` may be schema-qualified)."""

    source: sql.Composable
    table: str
    versions: str


def load_chunk_in_database(names: Names, chunk: Chunk) -> sql.Composed:
    """One statement: claim version ``(0, 0)`` for the chunk's mappable rows by the
    ordering rule (:func:`~replicator.stream.apply.versions.claim_snapshot_reads`), write
    the claimed rows, store the refused ones; returns (rows read, claimed, refused)."""
    t = sql.Identifier(names.table)
    cols = q(", ").join(map(sql.Identifier, TARGET_COLUMNS))
    rng = in_chunk(chunk)
    bad = problem()
    return q(
        "WITH claimed AS ({claim}),"
        " written AS ("
        " INSERT INTO {t} AS t ({cols})"
        " SELECT {mapped} FROM {src} p JOIN claimed c ON c.run_id = p.id WHERE {rng}"
        " {upsert}),"
        " refused AS ("
        " INSERT INTO {rejects} AS r (target_table, run_id, chunk_no, reason)"
        " SELECT {target_table}, p.id, {chunk_no}, ({bad}) FROM {src} p"
        " WHERE {rng} AND ({bad}) IS NOT NULL"
        " ON CONFLICT (target_table, run_id) DO UPDATE"
        " SET chunk_no = EXCLUDED.chunk_no, reason = EXCLUDED.reason, seen_at = now()"
        " RETURNING 1)"
        " SELECT (SELECT count(*) FROM {src} p WHERE {rng}),"
        " (SELECT count(*) FROM claimed), (SELECT count(*) FROM refused)"
    ).format(
        claim=versions.claim_snapshot_reads(
            names.versions,
            names.table,
            q("SELECT p.id FROM {} p WHERE {} AND ({}) IS NULL").format(names.source, rng, bad),
        ),
        t=t,
        src=names.source,
        rng=rng,
        bad=bad,
        cols=cols,
        mapped=q(", ").join(MAPPED.values()),
        upsert=upsert_tail(),
        rejects=sql.Identifier(REJECTS_TABLE),
        target_table=sql.Literal(names.table),
        chunk_no=sql.Literal(chunk.number),
    )


def copy_chunk_out(source: sql.Composable, chunk: Chunk) -> sql.Composed:
    """COPY the chunk's source rows (SOURCE_COLUMNS order) out, binary."""
    return q("COPY (SELECT {cols} FROM {src} p WHERE {rng}) TO STDOUT (FORMAT BINARY)").format(
        cols=q(", ").join(sql.Identifier("p", c) for c in SOURCE_COLUMNS),
        src=source,
        rng=in_chunk(chunk),
    )


#: Parameters: target_table, run_id[], chunk_no, reason[].
STORE_REJECTS = q(
    "INSERT INTO {r} AS r (target_table, run_id, chunk_no, reason)"
    " SELECT %s, u.run_id, %s, u.reason FROM unnest(%s::text[], %s::text[]) AS u(run_id, reason)"
    " ON CONFLICT (target_table, run_id) DO UPDATE"
    " SET chunk_no = EXCLUDED.chunk_no, reason = EXCLUDED.reason, seen_at = now()"
).format(r=sql.Identifier(REJECTS_TABLE))


#: The copy path's staging table in the target: the source's columns and types (binary
#: COPY needs them exactly), holding one chunk until commit.
STAGE = sql.Identifier("pg_temp", "replicator_backfill_stage")
CREATE_STAGE = q("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
    STAGE,
    q(", ").join(q("{} {}").format(sql.Identifier(c), q(t)) for c, t in SOURCE_TYPES.items()),
)
COPY_STAGE_IN = q("COPY {} FROM STDIN (FORMAT BINARY)").format(STAGE)
