"""The inverse of the mapping: ``workflow_runs`` shown in the legacy shape, and a write in
the legacy shape turned into a write of ``workflow_runs``.  Pure: it composes SQL and
runs nothing.

The compatibility view shows every ``workflow_runs`` row as a ``workflow_processes`` row:
the sixteen legacy columns, with their names and types, in the legacy table's order.
:func:`legacy_row` states the same inverse in Python, and the view is tested equal to it.
Per column:

* renamed columns are copied (``run_id`` -> ``id``, ``workflow_type`` ->
  ``workflow_name``, ...), cast to the legacy type;
* ``result_data`` / ``error_details``: the forward mapping writes ``{"result": <text>}``
  (``{}`` for NULL); the inverse unwraps exactly that form (an object whose only key is
  the wrapping key, holding a string) and shows ``{}`` and NULL as NULL.  Anything else
  (a richer document an updated application wrote) is shown as its JSON text, so the
  legacy shape never hides a value;
* ``total_cost``: ``DECIMAL(10,4)`` -> ``REAL`` (the nearest float32);
* ``status``: a legacy NULL became ``'pending'`` and stays ``'pending'``: the view cannot
  know which ``'pending'`` was a NULL.  The archive keeps the original until finalize,
  and a rollback restores it, and a REAL's exact value, wherever no write changed the
  column (:func:`written_log` records the columns each write changed).

A write through the view applies the forward mapping of :mod:`replicator.mapping.sql`
(the same expressions ``backfill`` and ``verify`` use) and refuses what the mapping
refuses (a ``total_cost`` beyond ``DECIMAL(10,4)``, NaN, ...), naming the column.  An
UPDATE writes only the target columns whose legacy column it changed, so a richer value
an updated application stored in ``result_data`` survives an update of ``status``; the
target's own columns (``user_id``, ``priority``, ``tags``, ...) are never touched by an
UPDATE and get the mapping's defaults on INSERT.

What the view cannot do as the table does, it refuses: a statement that read a row a
concurrent transaction changed (or gave another id, :func:`moved_log`) fails with 40001;
every ``INSERT ... ON CONFLICT`` fails with 0A000 (:func:`no_upsert_rule`).
"""

from __future__ import annotations

import json
import re
import struct
from decimal import Decimal
from typing import Any

from psycopg import sql

from replicator.mapping.columns import (
    JSON_WRAPPED,
    SOURCE_COLUMNS,
    SOURCE_TO_TARGET,
    TARGET_COLUMNS,
)
from replicator.mapping.sql import MAPPED, comparable, problem

q = sql.SQL

#: The view's companions: a rule that makes PostgreSQL refuse ``INSERT ... ON CONFLICT``
#: (:func:`no_upsert_rule`), and the ids rows of ``workflow_runs`` were moved away from
#: (a table, schemas/cutover_state.sql; its row trigger and the trigger's function share
#: its name: :func:`moved_log`).
NO_UPSERT_RULE = "replicator_compat_no_upsert"
MOVED = "replicator_compat_moved"

#: legacy column -> the target column it comes from (the mapping read backwards).
TARGET_OF: dict[str, str] = dict(SOURCE_TO_TARGET)
#: target column -> the legacy column that feeds it (columns the legacy table lacks: none).
SOURCE_OF: dict[str, str] = {t: s for s, t in SOURCE_TO_TARGET.items()}

_TYPE = re.compile(r"^[a-z][a-z0-9 _]*(\(\d+(,\d+)?\))?( without time zone| with time zone)?$")


def checked_type(name: str) -> str:
    """A legacy column's type as ``format_type`` printed it, accepted only in plain form
    (it is written into the view's DDL)."""
    if not _TYPE.match(name):
        raise ValueError(f"unexpected column type {name!r}")
    return name


def _unwrap(column: str, key: str) -> sql.Composable:
    c = sql.Identifier(column)
    k = sql.Literal(key)
    return q(
        "CASE WHEN t.{c} IS NULL OR t.{c}::jsonb = '{{}}'::jsonb THEN NULL"
        " WHEN jsonb_typeof(t.{c}::jsonb) = 'object' AND t.{c}::jsonb - {k} = '{{}}'::jsonb"
        " AND jsonb_typeof(t.{c}::jsonb -> {k}) = 'string' THEN t.{c}::jsonb ->> {k}"
        " ELSE t.{c}::text END"
    ).format(c=c, k=k)


def inverse(legacy_column: str) -> sql.Composable:
    """The SQL expression, over a ``workflow_runs`` row ``t``, of one legacy column."""
    target = TARGET_OF[legacy_column]
    if legacy_column in JSON_WRAPPED:
        return _unwrap(target, JSON_WRAPPED[legacy_column])
    return q("t.{}").format(sql.Identifier(target))


def legacy_items(columns: list[tuple[str, str]]) -> sql.Composed:
    """The legacy columns over a ``workflow_runs`` row ``t``: ``columns`` are the legacy
    table's (name, type) in its order; each is cast to its legacy type."""
    unknown = [name for name, _ in columns if name not in TARGET_OF]
    if unknown or len(columns) != len(SOURCE_COLUMNS):
        raise ValueError(f"the legacy columns are not the mapping's: {unknown or columns}")
    return q(", ").join(
        q("({expr})::{type} AS {name}").format(
            expr=inverse(name), type=q(checked_type(type_)), name=sql.Identifier(name)
        )
        for name, type_ in columns
    )


def view_select(columns: list[tuple[str, str]], schema: str, target: str) -> sql.Composed:
    """``SELECT`` of the compatibility view."""
    return q("SELECT {items} FROM {schema}.{target} AS t").format(
        items=legacy_items(columns), schema=sql.Identifier(schema), target=sql.Identifier(target)
    )


def _row_of(var: str, columns: list[tuple[str, str]], alias: str) -> sql.Composed:
    """``(SELECT NEW.id AS id, ...) AS alias``: a trigger's row as a relation."""
    return q("(SELECT {items}) AS {alias}").format(
        items=q(", ").join(
            q("{var}.{c} AS {c}").format(var=q(var), c=sql.Identifier(name)) for name, _ in columns
        ),
        alias=sql.Identifier(alias),
    )


#: The view's write function (PL/pgSQL): the argument for each step is in its comments.
_WRITE_BODY = """
DECLARE
    why text;
    detail text;
    now_row {view}%ROWTYPE;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        -- The statement chose OLD, and computed NEW, in its own snapshot.  A table would
        -- wait for a concurrent writer, then re-check and re-compute on the newest row
        -- (EvalPlanQual); a trigger cannot re-compute the statement's expressions.  So:
        -- lock the row, and if it changed since the statement read it, fail as
        -- PostgreSQL does under REPEATABLE READ, never write over the newer row.
        PERFORM FROM {t} WHERE run_id = OLD.id FOR UPDATE;
        IF FOUND THEN
            SELECT * INTO now_row FROM {view} AS v WHERE v.id = OLD.id;
        ELSIF EXISTS (SELECT FROM {moved} AS m WHERE m.run_id = OLD.id) THEN
            -- given another id meanwhile: a table would follow the row to its new id and
            -- re-check the statement there; a trigger cannot, so this is a change too
            now_row := NULL;
        ELSE
            RETURN NULL;  -- deleted meanwhile: skipped, as on a table
        END IF;
        IF now_row IS DISTINCT FROM OLD THEN
            RAISE EXCEPTION 'could not serialize access due to concurrent update'
                USING ERRCODE = 'serialization_failure',
                DETAIL = format('workflow_processes row %s changed after the statement read'
                    ' it (workflow_processes is a view of {target} since the cutover)', OLD.id),
                HINT = 'Retry the transaction.';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        DELETE FROM {t} WHERE run_id = OLD.id;
        RETURN OLD;
    END IF;
    SELECT {problem} INTO why FROM {new};
    IF why IS NOT NULL THEN
        RAISE EXCEPTION '% (workflow_processes is a view of {target} since the cutover)', why
            USING ERRCODE = 'check_violation';
    END IF;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO {t} ({columns}) SELECT {mapped} FROM {new};
            DELETE FROM {moved} WHERE run_id = NEW.id;  -- a row has this id again
        ELSE
            UPDATE {t} AS t SET {sets} FROM {new}, {old} WHERE t.run_id = OLD.id;
        END IF;
    EXCEPTION
        WHEN unique_violation THEN  -- in the legacy table's words
            RAISE EXCEPTION 'duplicate key value violates unique constraint "{pkey}"'
                USING ERRCODE = 'unique_violation', TABLE = 'workflow_processes',
                COLUMN = 'id', CONSTRAINT = '{pkey}',
                DETAIL = format('Key (id)=(%s) already exists.', NEW.id);
        WHEN OTHERS THEN  -- the same error, without the statement's text as its context
            GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
            IF detail = '' THEN
                RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = SQLERRM;
            END IF;
            RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = SQLERRM, DETAIL = detail;
    END;
    -- RETURNING shows the row as stored, as the view shows it (a rounded total_cost, the
    -- 'pending' of a NULL status)
    SELECT * INTO NEW FROM {view} AS v WHERE v.id = NEW.id;
    RETURN NEW;
END
"""


def write_function(
    function: str, columns: list[tuple[str, str]], schema: str, target: str, view: str
) -> sql.Composed:
    """The INSTEAD OF trigger function of the compatibility view ``view`` (module
    docstring).

    SECURITY DEFINER with a fixed search path: a role that may write the view writes
    ``workflow_runs`` through it without privileges of its own on that table."""
    t = q("{}.{}").format(sql.Identifier(schema), sql.Identifier(target))
    new, old = _row_of("NEW", columns, "p"), _row_of("OLD", columns, "o")
    sets = []
    for column in TARGET_COLUMNS:
        if column not in SOURCE_OF:
            continue
        legacy = sql.Identifier(SOURCE_OF[column])
        sets.append(
            q("{c} = CASE WHEN p.{s} IS DISTINCT FROM o.{s} THEN {m} ELSE t.{c} END").format(
                c=sql.Identifier(column), s=legacy, m=MAPPED[column]
            )
        )
    body = q(_WRITE_BODY).format(
        t=t,
        view=q("{}.{}").format(sql.Identifier(schema), sql.Identifier(view)),
        moved=q("{}.{}").format(sql.Identifier(schema), sql.Identifier(MOVED)),
        problem=problem(),
        new=new,
        old=old,
        target=q(target.replace("'", "")),
        pkey=q(f"{view}_pkey".replace("'", "").replace('"', "")),
        columns=q(", ").join(map(sql.Identifier, TARGET_COLUMNS)),
        mapped=q(", ").join(MAPPED[c] for c in TARGET_COLUMNS),
        sets=q(", ").join(sets),
    )
    return q(
        "CREATE OR REPLACE FUNCTION {schema}.{fn}() RETURNS trigger LANGUAGE plpgsql"
        " SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET extra_float_digits = 1"
        " AS {body}"
    ).format(
        schema=sql.Identifier(schema),
        fn=sql.Identifier(function),
        body=sql.Literal(body.as_string(None)),
    )


def no_upsert_rule(schema: str, view: str) -> list[sql.Composed]:
    """A rule on the view that does nothing: its only effect is that PostgreSQL refuses
    every ``INSERT ... ON CONFLICT`` on the view, whatever its form, with one error (0A000
    ``INSERT with ON CONFLICT clause cannot be used with table that has INSERT or UPDATE
    rules``).  Without it, a view with INSTEAD OF triggers refuses a conflict target (42P10,
    no unique index on a view) but runs ``ON CONFLICT DO NOTHING`` as a plain INSERT: a
    duplicate id fails (23505) where the table answers ``INSERT 0 0``.  The table's
    behaviour cannot be had: the trigger is not told that the statement had the clause."""
    rule = sql.Identifier(NO_UPSERT_RULE)
    v = q("{}.{}").format(sql.Identifier(schema), sql.Identifier(view))
    why = "INSERT ... ON CONFLICT cannot behave on this view as on the legacy table: refused"
    return [
        q("CREATE RULE {r} AS ON UPDATE TO {v} DO ALSO NOTHING").format(r=rule, v=v),
        q("COMMENT ON RULE {r} ON {v} IS {why}").format(r=rule, v=v, why=sql.Literal(why)),
    ]


def _trigger_function(schema: str, function: str, body: sql.Composable) -> sql.Composed:
    return q(
        "CREATE OR REPLACE FUNCTION {s}.{fn}() RETURNS trigger LANGUAGE plpgsql"
        " SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {body}"
    ).format(
        s=sql.Identifier(schema),
        fn=sql.Identifier(function),
        body=sql.Literal(body.as_string(None)),
    )


def moved_log(schema: str, target: str) -> list[sql.Composed]:
    """A row trigger on ``target`` (and its function) that records, in :data:`MOVED`, an id
    an UPDATE took away from its row: a statement through the view that then finds no row
    by that id fails with 40001 instead of skipping it (the write function).  An id a row
    takes is removed from the record again."""
    s, t, m = sql.Identifier(schema), sql.Identifier(target), sql.Identifier(MOVED)
    body = q(
        "BEGIN INSERT INTO {s}.{m} VALUES (OLD.run_id) ON CONFLICT DO NOTHING;"
        " DELETE FROM {s}.{m} WHERE run_id = NEW.run_id; RETURN NULL; END"
    ).format(s=s, m=m)
    return [
        _trigger_function(schema, MOVED, body),
        q(
            "CREATE TRIGGER {m} AFTER UPDATE OF run_id ON {s}.{t} FOR EACH ROW"
            " WHEN (OLD.run_id IS DISTINCT FROM NEW.run_id) EXECUTE FUNCTION {s}.{m}()"
        ).format(s=s, t=t, m=m),
    ]


def written_log(
    schema: str, target: str, function: str, written: str, triggers: dict[str, tuple[str, str]]
) -> list[sql.Composed]:
    """Statement triggers on ``target`` (``triggers``: INSERT and UPDATE, event -> (name,
    transition tables ``new_rows``/``old_rows``)), and their function, that add to
    ``written`` the columns fed by a legacy column that each row's write changed: every
    one for an inserted row or a row that took another id.  The rollback writes only those
    in their legacy form."""
    fed = [c for c in TARGET_COLUMNS if c in SOURCE_OF and c != "run_id"]
    every = q("ARRAY[{}]::text[]").format(q(", ").join(map(sql.Literal, fed)))
    changed = q("array_remove(ARRAY[{}]::text[], NULL)").format(
        q(", ").join(
            q("CASE WHEN {o} IS DISTINCT FROM {n} THEN {c} END").format(
                o=comparable("o", c), n=comparable("n", c), c=sql.Literal(c)
            )
            for c in fed
        )
    )
    body = q(
        """
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {w} AS w (run_id, columns) SELECT n.run_id, {every}
            FROM new_rows AS n ORDER BY 1 {union};
    ELSE
        INSERT INTO {w} AS w (run_id, columns)
            SELECT n.run_id, CASE WHEN o.run_id IS NULL THEN {every} ELSE {changed} END
            FROM new_rows AS n LEFT JOIN old_rows AS o ON o.run_id = n.run_id ORDER BY 1 {union};
    END IF;
    RETURN NULL;
END
"""
    ).format(
        w=q("{}.{}").format(sql.Identifier(schema), sql.Identifier(written)),
        every=every,
        changed=changed,
        union=q(
            "ON CONFLICT (run_id) DO UPDATE SET"
            " columns = ARRAY(SELECT DISTINCT unnest(w.columns || EXCLUDED.columns) ORDER BY 1)"
        ),
    )
    s, t = sql.Identifier(schema), sql.Identifier(target)
    return [_trigger_function(schema, function, body)] + [
        q(
            "CREATE TRIGGER {n} AFTER {event} ON {s}.{t} {ref}"
            " FOR EACH STATEMENT EXECUTE FUNCTION {s}.{fn}()"
        ).format(
            n=sql.Identifier(name),
            event=q(event),
            s=s,
            t=t,
            ref=q(ref),
            fn=sql.Identifier(function),
        )
        for event, (name, ref) in triggers.items()
    ]


# ------------------------------------------------------------------ the same, in Python


def unwrap(document: Any, key: str) -> str | None:
    """The legacy text of a wrapped JSON column (``document`` as stored: JSON text or the
    parsed value), as the view shows it."""
    if document is None:
        return None
    value = json.loads(document) if isinstance(document, str) else document
    if value == {}:
        return None
    if isinstance(value, dict) and set(value) == {key} and isinstance(value[key], str):
        return str(value[key])
    return document if isinstance(document, str) else json.dumps(value)


def float32(value: Decimal | None) -> float | None:
    """``DECIMAL`` -> ``REAL``: the nearest float32 (as a Python float)."""
    if value is None:
        return None
    return float(struct.unpack("f", struct.pack("f", float(value)))[0])


def legacy_row(target: dict[str, Any]) -> dict[str, Any]:
    """A ``workflow_runs`` row (by column name) in the legacy shape, as the view shows it."""
    out: dict[str, Any] = {}
    for legacy in SOURCE_COLUMNS:
        value = target[TARGET_OF[legacy]]
        if legacy in JSON_WRAPPED:
            value = unwrap(value, JSON_WRAPPED[legacy])
        elif legacy == "total_cost":
            value = float32(value)
        out[legacy] = value
    return out
