"""The mapping written in SQL, over a source row ``p``: what ``backfill`` loads with
(source and target in one database, or a COPY staged in the target) and ``verify``
compares with.  Pure: it composes SQL, runs nothing.

It must produce exactly what :func:`replicator.mapping.rows.map_to_tuple` produces,
column by column (JSON columns as their exact text), and refuse exactly the rows
``map_to_tuple`` refuses; tests/integration/test_backfill.py checks both with
hypothesis in the real database.  Why each expression is exact:

* ``to_json(text)::text`` escapes like Python's ``json.encoder.encode_basestring``
  (``ensure_ascii=False``): ``\\" \\\\ \\b \\f \\n \\r \\t``, every other character below
  U+0020 as lower-case ``\\u00xx``, everything else (DEL, non-ASCII) as is.  The object is
  written by hand (``{"result": `` ... ``}``): ``json_build_object`` would write
  ``{"result" : ...}``.
* ``round(total_cost::text::numeric, 4)``: the value's text is its shortest round-trip
  decimal for a REAL and a DOUBLE PRECISION alike (``extra_float_digits`` > 0, which
  :func:`replicator.db.connect.connect` and the cutover's trigger function set), the
  decimal the Python mapping reads from a JSON event; ``numeric`` holds it exactly and
  ``round(numeric)`` rounds half away from zero, as ``ROUND_HALF_UP`` does.  (``real::numeric``
  would keep 6 digits, ``float8::numeric`` 15.)  NaN and infinities would pass ``round``
  (and NaN fits ``DECIMAL(10,4)``!), so :func:`problem` refuses them first.
"""

from __future__ import annotations

from psycopg import sql

from replicator.events import UNAVAILABLE
from replicator.mapping.columns import (
    JSON_COLUMNS,
    JSON_WRAPPED,
    SOURCE_COLUMNS,
    SOURCE_TABLE,
    SOURCE_TYPES,
    TARGET_COLUMNS,
)

q = sql.SQL


def _json_object(key: str, column: str) -> sql.Composable:
    prefix = '{"' + key + '": '
    return q(
        "(CASE WHEN p.{c} IS NULL THEN '{{}}'"
        " ELSE {prefix} || to_json(p.{c})::text || '}}' END)::json"
    ).format(c=sql.Identifier(column), prefix=sql.Literal(prefix))


#: ``total_cost`` mapped: its shortest text, rounded (see the module's docstring).
COST = "round(p.total_cost::text::numeric, 4)"

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
    "result_data": _json_object(JSON_WRAPPED["result"], "result"),
    "error_details": _json_object(JSON_WRAPPED["error_message"], "error_message"),
    "execution_time_ms": q("p.execution_time"),
    "total_cost": q(COST),
    "tags": q("'[]'::json"),
    "metadata": q("'{}'::json"),
    "progress_data": q("'{}'::json"),
    "resource_usage": q("'{}'::json"),
}
if tuple(MAPPED) != TARGET_COLUMNS:  # pragma: no cover - guards a mapping change
    raise ImportError("replicator.mapping.sql's mapping does not match TARGET_COLUMNS")

_TEXT_COLUMNS = tuple(c for c in SOURCE_COLUMNS[1:] if SOURCE_TYPES[c] == "text")
_TIMESTAMP_COLUMNS = tuple(c for c in SOURCE_COLUMNS if SOURCE_TYPES[c].startswith("timestamp"))


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
                    q("abs({}) >= 1e6").format(q(COST)),
                    q("p.total_cost::text || ' does not fit DECIMAL(10,4) (|value| < 10**6)'"),
                )
            )
    return checks


def problem() -> sql.Composed:
    """Why ``p`` cannot be mapped (text), or NULL when it can: the rows map_to_tuple refuses."""
    whens = [
        q("WHEN {cond} THEN {col} || {reason}").format(
            cond=cond, col=sql.Literal(f"{SOURCE_TABLE}.{column}: "), reason=reason
        )
        for column, cond, reason in _checks()
    ]
    return q("CASE {} END").format(q(" ").join(whens))


def comparable(alias: str, name: str) -> sql.Composable:
    """``alias.name``, as text for JSON columns (json has no ``=``)."""
    cast = "::text" if name in JSON_COLUMNS else ""
    return q(alias + ".{}" + cast).format(sql.Identifier(name))


def upsert_tail() -> sql.Composed:
    """``ON CONFLICT (run_id) DO UPDATE SET ... WHERE <something changed>`` for the target
    columns: a row written again with the same values is not written (no new row version,
    no index churn), so applying a change twice costs a comparison."""
    updatable = TARGET_COLUMNS[1:]
    return q(
        "ON CONFLICT (run_id) DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})"
    ).format(
        sets=q(", ").join(q("{c} = EXCLUDED.{c}").format(c=sql.Identifier(n)) for n in updatable),
        old=q(", ").join(comparable("t", n) for n in updatable),
        new=q(", ").join(comparable("excluded", n) for n in updatable),
    )
