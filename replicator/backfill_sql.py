"""The SQL of ``replicator backfill``: chunk planning, the mapping written in SQL, the
per-chunk statements and the chunk state.  Pure: it composes statements, runs nothing.

The SQL mapping must produce exactly what :func:`replicator.mapping.map_to_tuple`
produces, column by column (JSON columns as their exact text), and must refuse exactly
the rows ``map_to_tuple`` refuses; tests/integration/test_backfill.py checks both with
hypothesis in the real database.  Why each expression is exact:

* ``to_json(text)::text`` escapes like Python's ``json.encoder.encode_basestring``
  (``ensure_ascii=False``): ``\\" \\\\ \\b \\f \\n \\r \\t``, every other character below
  U+0020 as lower-case ``\\u00xx``, everything else (DEL, non-ASCII) as is.  The object is
  written by hand (``{"result": `` ... ``}``): ``json_build_object`` would write
  ``{"result" : ...}``.
* ``round(total_cost::float8::numeric, 4)``: REAL -> float8 is exact; float8 -> numeric
  keeps 15 significant digits.  A float32 ``x`` with ``|x| < 10**6`` is ``k * 2**-n`` with
  ``k < 2**24``; its distance to a rounding tie ``(2m+1) / 20000`` is either 0 (then the
  15 digits hold ``x`` exactly) or at least ``|x| * 9.5e-11``, far more than the 15-digit
  error (``|x| * 5e-15``), so no tie is created or lost.  ``round(numeric)`` rounds half
  away from zero, as ``ROUND_HALF_UP`` does.  NaN and infinities would pass ``round``
  (and NaN fits ``DECIMAL(10,4)``!), so :func:`problem` refuses them first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from psycopg import sql

from replicator.events import UNAVAILABLE
from replicator.mapping import SOURCE_COLUMNS, TARGET_COLUMNS

SOURCE_TABLE = "workflow_processes"
CHUNKS_TABLE = "replicator_backfill_chunks"
REJECTS_TABLE = "replicator_backfill_rejects"
INDEXES_TABLE = "replicator_backfill_indexes"

q = sql.SQL

#: The source columns' types, which the SQL mapping and the binary COPY rely on.
SOURCE_TYPES: dict[str, str] = {
    **dict.fromkeys(SOURCE_COLUMNS, "text"),
    **dict.fromkeys(("max_turns", "execution_time"), "integer"),
    **dict.fromkeys(
        ("created_at", "updated_at", "started_at", "completed_at"), "timestamp without time zone"
    ),
    "total_cost": "real",
}


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


# --------------------------------------------------------------------------- the mapping


def _json_object(key: str, column: str) -> sql.Composable:
    prefix = '{"' + key + '": '
    return q(
        "(CASE WHEN p.{c} IS NULL THEN '{{}}'"
        " ELSE {prefix} || to_json(p.{c})::text || '}}' END)::json"
    ).format(c=sql.Identifier(column), prefix=sql.Literal(prefix))


#: target column -> SQL expression over the source row ``p`` (map_to_tuple's values).
MAPPED: dict[str, sql.Composable] = {
    "run_id": q("p.id"),
    "workflow_type": q("p.workflow_name"),
    "description": q("p.message"),
    "user_id": q("NULL::text"),
    "status": q("COALESCE(p.status, 'pending')"),
    "priority": q("'normal'::text"),
    "max_turns": q("p.max_turns"),
    "session_id": q("p.session_name"),
    "git_branch": q("p.git_branch"),
    "repository_url": q("p.repository_url"),
    "created_at": q("p.created_at"),
    "updated_at": q("p.updated_at"),
    "started_at": q("p.started_at"),
    "completed_at": q("p.completed_at"),
    "result_data": _json_object("result", "result"),
    "error_details": _json_object("error", "error_message"),
    "execution_time_ms": q("p.execution_time"),
    "total_cost": q("round(p.total_cost::float8::numeric, 4)"),
    "tags": q("'[]'::json"),
    "metadata": q("'{}'::json"),
    "progress_data": q("'{}'::json"),
    "resource_usage": q("'{}'::json"),
}
if tuple(MAPPED) != TARGET_COLUMNS:  # pragma: no cover - guards a mapping change
    raise ImportError("replicator.backfill_sql's mapping does not match TARGET_COLUMNS")

_TEXT_COLUMNS = (
    "workflow_name",
    "message",
    "session_name",
    "git_branch",
    "repository_url",
    "status",
    "result",
    "error_message",
)
_TIMESTAMP_COLUMNS = ("created_at", "updated_at", "started_at", "completed_at")


def _checks() -> list[tuple[str, sql.Composable, sql.Composable]]:
    """(column, condition, reason) in map_to_tuple's order: the first problem is reported."""
    checks: list[tuple[str, sql.Composable, sql.Composable]] = []
    for column in SOURCE_COLUMNS[1:]:
        c = sql.Identifier(column)
        if column in _TEXT_COLUMNS:
            checks.append(
                (
                    column,
                    q("p.{} = {}").format(c, sql.Literal(UNAVAILABLE)),
                    sql.Literal("holds Debezium's unavailable-value placeholder"),
                )
            )
        elif column in _TIMESTAMP_COLUMNS:
            checks.append(
                (
                    column,
                    q("p.{c} NOT BETWEEN '0001-01-01' AND '9999-12-31 23:59:59.999999'").format(
                        c=c
                    ),
                    q("p.{}::text || ' is outside the datetime range (years 1 to 9999)'").format(c),
                )
            )
        elif column == "total_cost":
            checks.append(
                (
                    column,
                    q("p.total_cost IN ('NaN', 'Infinity', '-Infinity')"),
                    q("p.total_cost::text || ' is not a finite number'"),
                )
            )
            checks.append(
                (
                    column,
                    q("abs(p.total_cost::float8) >= 1e6"),
                    q("p.total_cost::text || ' does not fit DECIMAL(10,4) (|value| < 10**6)'"),
                )
            )
    return checks


def problem() -> sql.Composed:
    """Why ``p`` cannot be mapped (text), or NULL when it can: the rows map_to_tuple refuses."""
    whens = [
        q("WHEN {cond} THEN {col} || {reason}").format(
            cond=cond, col=sql.Literal(f"workflow_processes.{column}: "), reason=reason
        )
        for column, cond, reason in _checks()
    ]
    return q("CASE {} END").format(q(" ").join(whens))


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class Names:
    """Identifiers the statements use (``source`` may be schema-qualified)."""

    source: sql.Composable
    table: str
    versions: str


def load_chunk_in_database(names: Names, chunk: Chunk) -> sql.Composed:
    """One statement: claim version 0 for the chunk's mappable rows, write the claimed
    rows, store the refused ones; returns (rows read, claimed, refused).

    The claim is the sink's rule for LSN 0: insert, or take over an entry whose
    version is 0 or -1 (never a streamed one, never a deleted one).  The claimed
    versions rows stay locked until commit, so a streamed change of the same row waits
    and then wins.
    """
    t, v = sql.Identifier(names.table), sql.Identifier(names.versions)
    cols = q(", ").join(map(sql.Identifier, TARGET_COLUMNS))
    rng = in_chunk(chunk)
    bad = problem()
    return q(
        "WITH claimed AS ("
        " INSERT INTO {v} AS v (run_id, source_lsn, deleted)"
        " SELECT p.id, 0, false FROM {src} p WHERE {rng} AND ({bad}) IS NULL"
        " ON CONFLICT (run_id) DO UPDATE"
        " SET source_lsn = GREATEST(v.source_lsn, EXCLUDED.source_lsn), deleted = EXCLUDED.deleted"
        " WHERE EXCLUDED.source_lsn >= v.source_lsn"
        " RETURNING v.run_id),"
        " written AS ("
        " INSERT INTO {t} AS t ({cols})"
        " SELECT {mapped} FROM {src} p JOIN claimed c ON c.run_id = p.id WHERE {rng}"
        " ON CONFLICT (run_id) DO UPDATE SET {sets}"
        " WHERE ({old}) IS DISTINCT FROM ({new})),"
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
        v=v,
        t=t,
        src=names.source,
        rng=rng,
        bad=bad,
        cols=cols,
        mapped=q(", ").join(MAPPED.values()),
        sets=q(", ").join(
            q("{c} = EXCLUDED.{c}").format(c=sql.Identifier(n)) for n in TARGET_COLUMNS[1:]
        ),
        old=q(", ").join(_comparable("t", n) for n in TARGET_COLUMNS[1:]),
        new=q(", ").join(_comparable("excluded", n) for n in TARGET_COLUMNS[1:]),
        rejects=sql.Identifier(REJECTS_TABLE),
        target_table=sql.Literal(names.table),
        chunk_no=sql.Literal(chunk.number),
    )


_JSON_COLUMNS = frozenset(
    {"result_data", "error_details", "tags", "metadata", "progress_data", "resource_usage"}
)


def _comparable(alias: str, name: str) -> sql.Composable:
    cast = "::text" if name in _JSON_COLUMNS else ""  # json has no "="
    return q(alias + ".{}" + cast).format(sql.Identifier(name))


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
