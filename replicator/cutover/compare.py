"""The comparisons of the cutover (pure: composes SQL, runs nothing): the mapped legacy
table against ``workflow_runs``, whole or only for the ids of a log table."""

from __future__ import annotations

from psycopg import sql

from replicator.mapping.columns import SOURCE_TABLE, TARGET_COLUMNS
from replicator.mapping.sql import MAPPED, comparable, problem

q = sql.SQL
#: A range of ids: after the first (exclusive; None: from the start) up to the second
#: (inclusive; None: to the end).
Slice = tuple[str | None, str | None]


def within(column: sql.Composable, ids: Slice | None) -> sql.Composable:
    """Pure. ``column`` in the range ``ids`` (TRUE for None), as literals: each slice is
    planned with its own bounds, through the primary key."""
    after, upto = ids or (None, None)
    parts = [q("{} > {}").format(column, sql.Literal(after))] if after is not None else []
    if upto is not None:
        parts.append(q("{} <= {}").format(column, sql.Literal(upto)))
    return q(" AND ").join(parts) if parts else q("TRUE")


def _mapped(schema: str, where: sql.Composable, source: str = SOURCE_TABLE) -> sql.Composed:
    return q("SELECT {cols} FROM {s}.{t} AS p {where}").format(
        cols=q(", ").join(
            q("{} AS {}").format(MAPPED[c], sql.Identifier(c)) for c in TARGET_COLUMNS
        ),
        s=sql.Identifier(schema),
        t=sql.Identifier(source),
        where=where,
    )


def _same() -> dict[str, sql.Composable]:
    return {
        "a": q(", ").join(comparable("s", c) for c in TARGET_COLUMNS[1:]),
        "b": q(", ").join(comparable("t", c) for c in TARGET_COLUMNS[1:]),
    }


def differing(
    schema: str,
    target: str,
    among: sql.Composable | None = None,
    source: str = SOURCE_TABLE,
    ids: Slice | None = None,
) -> sql.Composed:
    """``(run_id, gone)`` of every row where the mapped legacy table (``source``: the
    archive, after the cutover) and ``target`` differ (``gone``: the target has a row the
    source has not): all of them, or only those whose id is in the relation ``among`` (one
    column, ``run_id``), found through both tables' primary keys, so the cost is that of
    the log, not of the tables.  Whole: only the ids in ``ids`` (all of them: None)."""
    s, t = sql.Identifier(schema), sql.Identifier(target)
    if among is None:
        return q(
            "SELECT coalesce(s.run_id, t.run_id) AS run_id, s.run_id IS NULL AS gone"
            " FROM ({src}) AS s FULL JOIN (SELECT * FROM {s}.{t} AS t WHERE {range}) AS t"
            " ON t.run_id = s.run_id"
            " WHERE s.run_id IS NULL OR t.run_id IS NULL OR ({a}) IS DISTINCT FROM ({b})"
        ).format(
            src=_mapped(schema, q("WHERE {}").format(within(q("p.id"), ids)), source),
            s=s,
            t=t,
            range=within(q("t.run_id"), ids),
            **_same(),
        )
    return q(
        "SELECT k.run_id, s.run_id IS NULL AS gone FROM {k} AS k"
        " LEFT JOIN LATERAL ({src}) AS s ON true"
        " LEFT JOIN LATERAL (SELECT * FROM {s}.{t} AS t WHERE t.run_id = k.run_id) AS t ON true"
        " WHERE (s.run_id IS NULL) <> (t.run_id IS NULL)"
        " OR (s.run_id IS NOT NULL AND ({a}) IS DISTINCT FROM ({b}))"
    ).format(
        src=_mapped(schema, q("WHERE p.id = k.run_id"), source),
        s=s,
        t=t,
        k=among,
        **_same(),
    )


def unmappable(
    schema: str, among: sql.Composable | None = None, ids: Slice | None = None
) -> sql.Composed:
    """Ids of source rows the mapping refuses (they would exist in neither table after
    the cutover): all of them (those in ``ids``), or those whose id is in the relation
    ``among``."""
    rows = q("(SELECT * FROM {s}.{t} AS p WHERE {range}) p").format(
        s=sql.Identifier(schema), t=sql.Identifier(SOURCE_TABLE), range=within(q("p.id"), ids)
    )
    if among is not None:  # by primary key, one row at a time: the log is small
        rows = q(
            "{k} k JOIN LATERAL (SELECT * FROM {rows} WHERE p.id = k.run_id) p ON true"
        ).format(k=among, rows=rows)
    return q("SELECT p.id FROM {rows} WHERE {why} IS NOT NULL ORDER BY 1").format(
        rows=rows, why=problem()
    )
