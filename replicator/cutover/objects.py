"""The database objects the cutover creates and the rollback and finalize remove, and the
cutover record (``schemas/cutover_state.sql``): the one owner of all of them.

All run on the caller's connection, inside the caller's transaction: the switch and the
rollback are each one transaction, so the database is never seen half switched."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from replicator.cutover.legacy import MOVED, moved_log, written_log
from replicator.db.schema import read_sql
from replicator.events import PartitionPosition

q = sql.SQL

WRITE_FUNCTION = "replicator_compat_write"
LOG_FUNCTION = "replicator_log_changes"
FROZEN_FUNCTION = "replicator_archive_frozen"
CHANGES = "replicator_cutover_changes"
WRITTEN = "replicator_cutover_written"  # the columns each logged row's writes changed
WRITTEN_FUNCTION = "replicator_log_written"
PENDING = "replicator_cutover_pending"
PENDING_FUNCTIONS = {"id": "replicator_pending_source", "run_id": "replicator_pending_target"}
_LOG_TRIGGERS = {
    "INSERT": ("replicator_log_insert", "REFERENCING NEW TABLE AS new_rows"),
    "UPDATE": ("replicator_log_update", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    "DELETE": ("replicator_log_delete", "REFERENCING OLD TABLE AS old_rows"),
    "TRUNCATE": ("replicator_log_truncate", ""),  # BEFORE: every row, while it is there
}
#: The pending log's triggers (on both tables, while a cutover prepares).
_PENDING_TRIGGERS = {
    event: (name.replace("replicator_log_", "replicator_pending_"), ref)
    for event, (name, ref) in _LOG_TRIGGERS.items()
}
PENDING_TRIGGER_NAMES = frozenset(name for name, _ in _PENDING_TRIGGERS.values())
_WRITTEN_TRIGGERS = {
    event: (name.replace("replicator_log_", "replicator_log_written_"), ref)
    for event, (name, ref) in _LOG_TRIGGERS.items()
    if event in ("INSERT", "UPDATE")
}


@dataclass(frozen=True)
class Record:
    """The latest row of ``replicator_cutover``."""

    id: int
    state: str
    cut_at: datetime
    cut_lsn: str
    source_rows: int
    target_rows: int
    blocked_ms: int
    repaired_rows: int
    positions: list[PartitionPosition]
    archive_table: str
    target_table: str = "workflow_runs"


def ensure_state(conn: psycopg.Connection[Any], reader: str | None = None) -> None:
    """The record's tables; ``reader`` (the service role) may read the record and the
    change log: the status commands, ``verify`` and ``assess`` run as that role."""
    conn.execute(read_sql("cutover_state.sql"))
    if reader:
        conn.execute(
            q("GRANT SELECT ON replicator_cutover, {} TO {}").format(
                sql.Identifier(CHANGES), sql.Identifier(reader)
            )
        )


def latest(conn: psycopg.Connection[Any], source: str) -> Record | None:
    """The newest cutover of ``source`` (None: never cut over, or the table is missing)."""
    if conn.execute("SELECT to_regclass('replicator_cutover')").fetchone() == (None,):
        return None
    row = conn.execute(
        "SELECT id, state, cut_at, cut_lsn::text, source_rows, target_rows, blocked_ms,"
        " repaired_rows, positions, archive_table, target_table FROM replicator_cutover"
        " WHERE source_table = %s ORDER BY id DESC LIMIT 1",
        [source],
    ).fetchone()
    if row is None:
        return None
    positions = [PartitionPosition(**p) for p in row[8]]
    return Record(*row[:8], positions=positions, archive_table=row[9], target_table=row[10])  # type: ignore[misc]  # the row's columns in Record's order


def cut_over_into(conn: psycopg.Connection[Any], target: str) -> datetime | None:
    """When the stream into ``target`` was closed by a cutover that no rollback reopened
    (None: it was not, or it was reopened)."""
    if conn.execute("SELECT to_regclass('replicator_cutover')").fetchone() == (None,):
        return None
    row = conn.execute(
        "SELECT state, cut_at FROM replicator_cutover WHERE target_table = %s"
        " ORDER BY id DESC LIMIT 1",
        [target],
    ).fetchone()
    return None if row is None or row[0] == "rolled_back" else row[1]


def record_cutover(
    conn: psycopg.Connection[Any],
    names: tuple[str, str, str],
    lsn: str,
    counts: tuple[int, int],
    blocked_ms: int,
    repaired: int,
    positions: list[PartitionPosition],
) -> None:
    held = [
        {"topic": p.topic, "partition": p.partition, "next_offset": p.next_offset,
         "last_lsn": p.last_lsn, "topic_id": p.topic_id}
        for p in positions
    ]  # fmt: skip
    conn.execute(
        "INSERT INTO replicator_cutover (source_table, target_table, archive_table, state,"
        " cut_lsn, source_rows, target_rows, blocked_ms, repaired_rows, positions)"
        " VALUES (%s, %s, %s, 'cut_over', %s::pg_lsn, %s, %s, %s, %s, %s)",
        [*names, lsn, *counts, blocked_ms, repaired, Jsonb(held)],
    )


def record_rollback(
    conn: psycopg.Connection[Any], record: Record, lsn: str, blocked_ms: int, restored: int
) -> None:
    conn.execute(
        "UPDATE replicator_cutover SET state = 'rolled_back', rolled_back_at = now(),"
        " rollback_lsn = %s::pg_lsn, rollback_blocked_ms = %s, restored_rows = %s"
        " WHERE id = %s",
        [lsn, blocked_ms, restored, record.id],
    )


def record_counts(
    conn: psycopg.Connection[Any], source: str, source_rows: int, target_rows: int
) -> None:
    """The latest cutover's row counts, taken right after its switch committed (the archive
    is frozen: its count is the source's at the switch)."""
    conn.execute(
        "UPDATE replicator_cutover SET source_rows = %s, target_rows = %s WHERE id ="
        " (SELECT max(id) FROM replicator_cutover WHERE source_table = %s)",
        [source_rows, target_rows, source],
    )


def record_finalized(conn: psycopg.Connection[Any], record: Record) -> None:
    conn.execute(
        "UPDATE replicator_cutover SET state = 'finalized', finalized_at = now() WHERE id = %s",
        [record.id],
    )


# ------------------------------------------------------------------ the change log


def log_changes(conn: psycopg.Connection[Any], schema: str, target: str) -> None:
    """Statement triggers on ``target`` that record every run_id written after the cutover
    (view writes and direct writes alike; TRUNCATE records every row first), and with each
    the columns its writes changed (``WRITTEN``, legacy.py ``written_log``)."""
    s = sql.Identifier(schema)
    for log in (CHANGES, WRITTEN):
        conn.execute(q("TRUNCATE {s}.{log}").format(s=s, log=sql.Identifier(log)))
    _logging(conn, schema, target, "run_id", CHANGES, LOG_FUNCTION, _LOG_TRIGGERS)
    for statement in written_log(schema, target, WRITTEN_FUNCTION, WRITTEN, _WRITTEN_TRIGGERS):
        conn.execute(statement)


def watch_moves(conn: psycopg.Connection[Any], schema: str, target: str) -> None:
    """A row trigger on ``target`` recording every id an UPDATE takes away from its row
    (legacy.py ``moved_log``), from an empty record: it lives with the compatibility view,
    finalized or not, and goes with it at a rollback (:func:`unwatch_moves`)."""
    conn.execute(q("TRUNCATE {}.{}").format(sql.Identifier(schema), sql.Identifier(MOVED)))
    for statement in moved_log(schema, target):
        conn.execute(statement)


def unwatch_moves(conn: psycopg.Connection[Any], schema: str, target: str) -> None:
    s, t, m = sql.Identifier(schema), sql.Identifier(target), sql.Identifier(MOVED)
    conn.execute(q("DROP TRIGGER IF EXISTS {m} ON {s}.{t}").format(s=s, t=t, m=m))
    conn.execute(q("DROP FUNCTION IF EXISTS {s}.{m}()").format(s=s, m=m))
    conn.execute(q("TRUNCATE {s}.{m}").format(s=s, m=m))


def watch_pending(conn: psycopg.Connection[Any], schema: str, source: str, target: str) -> None:
    """From now on, every id written in ``source`` or ``target`` goes to the pending log
    (the caller's transaction; the caller holds a lock that makes writers wait, briefly;
    the triggers of an earlier cutover are gone: :func:`unwatch_pending`)."""
    for table, key in ((source, "id"), (target, "run_id")):
        function = PENDING_FUNCTIONS[key]
        _logging(conn, schema, table, key, PENDING, function, _PENDING_TRIGGERS, touch=True)


def unwatch_pending(conn: psycopg.Connection[Any], schema: str, source: str, target: str) -> None:
    """The pending log's triggers gone from both tables, the log emptied."""
    s = sql.Identifier(schema)
    for table in (source, target):
        for name, _ in _PENDING_TRIGGERS.values():
            conn.execute(
                q("DROP TRIGGER IF EXISTS {n} ON {s}.{t}").format(
                    n=sql.Identifier(name), s=s, t=sql.Identifier(table)
                )
            )
    for fn in PENDING_FUNCTIONS.values():
        conn.execute(q("DROP FUNCTION IF EXISTS {s}.{fn}()").format(s=s, fn=sql.Identifier(fn)))
    conn.execute(q("TRUNCATE {s}.{log}").format(s=s, log=sql.Identifier(PENDING)))


def pending_left(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """The pending log's triggers in ``schema`` (``trigger on table``): present only while a
    cutover prepares, or left by one that was interrupted (killed) before it removed them.
    Recognised by name and by the function they run, both ours."""
    rows = conn.execute(
        "SELECT g.tgname || ' on ' || c.relname FROM pg_trigger g"
        " JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_proc f ON f.oid = g.tgfoid"
        " WHERE c.relnamespace = to_regnamespace(%s) AND NOT g.tgisinternal"
        " AND g.tgname = ANY(%s) AND f.proname = ANY(%s) ORDER BY 1",
        [schema, list(PENDING_TRIGGER_NAMES), list(PENDING_FUNCTIONS.values())],
    ).fetchall()
    return [str(r[0]) for r in rows]


#: The advisory lock (two int4 keys) a cutover's session holds while it runs (ended with
#: the session, however it ends: a killed cutover holds it no more).
RUNNING_KEY = (0x7265706C, 0x6375)


def claim(conn: psycopg.Connection[Any]) -> bool:
    """Mark this session as the cutover running now; False when another session is."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", list(RUNNING_KEY)).fetchone()
    return bool(row and row[0])


def running(conn: psycopg.Connection[Any]) -> int | None:
    """The process id of the session of a cutover running now (None: none is)."""
    row = conn.execute(
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND l.objsubid = 2 AND l.classid = %s::oid AND l.objid = %s::oid",
        list(RUNNING_KEY),
    ).fetchone()
    return None if row is None else int(row[0])


def silence_pending(conn: psycopg.Connection[Any], schema: str) -> None:
    """The pending log's trigger functions made to do nothing (the caller's transaction):
    no lock on the tables is taken, so a cutover that stops can always do this at once;
    the triggers themselves are dropped when their tables can be locked briefly (by the
    same cutover, or the next one before it starts)."""
    for fn in PENDING_FUNCTIONS.values():
        conn.execute(
            q(
                "CREATE OR REPLACE FUNCTION {s}.{fn}() RETURNS trigger LANGUAGE plpgsql"
                " SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
                " AS 'BEGIN RETURN NULL; END'"
            ).format(s=sql.Identifier(schema), fn=sql.Identifier(fn))
        )


def _logging(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    key: str,
    log_table: str,
    function: str,
    triggers: dict[str, tuple[str, str]],
    touch: bool = False,
) -> None:
    """Statement triggers on ``table`` writing the ``key`` of every row a statement
    inserted, updated (old and new) or deleted into ``log_table``; TRUNCATE every row.
    Ids are logged in key order, as the switch logs its own, so that two writers of the
    log seldom wait on each other in opposite orders.
    ``touch``: an id already logged is written again (a new row version), so that a
    REPEATABLE READ transaction that took it out of the log meanwhile fails (40001)
    instead of losing the write (the switch's passes, switch.py)."""
    s, t, log = sql.Identifier(schema), sql.Identifier(table), sql.Identifier(log_table)
    k = sql.Identifier(key)
    body = q(
        """
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO {s}.{log} SELECT {k} FROM {s}.{t} ORDER BY 1 {conflict};
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO {s}.{log} SELECT {k} FROM new_rows ORDER BY 1 {conflict};
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO {s}.{log} SELECT {k} FROM old_rows ORDER BY 1 {conflict};
    END IF;
    RETURN NULL;
END
"""
    ).format(
        s=s,
        t=t,
        log=log,
        k=k,
        conflict=q(
            "ON CONFLICT (run_id) DO UPDATE SET run_id = EXCLUDED.run_id"
            if touch
            else "ON CONFLICT DO NOTHING"
        ),
    )
    conn.execute(
        q(
            "CREATE OR REPLACE FUNCTION {s}.{fn}() RETURNS trigger LANGUAGE plpgsql"
            " SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS {body}"
        ).format(s=s, fn=sql.Identifier(function), body=sql.Literal(body.as_string(None)))
    )
    for event, (name, referencing) in triggers.items():
        conn.execute(
            q(
                "CREATE TRIGGER {name} {when} {event} ON {s}.{t} {ref}"
                " FOR EACH STATEMENT EXECUTE FUNCTION {s}.{fn}()"
            ).format(
                name=sql.Identifier(name),
                when=q("BEFORE" if event == "TRUNCATE" else "AFTER"),  # the rows still there
                event=q(event),
                s=s,
                t=t,
                ref=q(referencing),
                fn=sql.Identifier(function),
            )
        )


def drop_change_log(conn: psycopg.Connection[Any], schema: str, target: str) -> None:
    s, t = sql.Identifier(schema), sql.Identifier(target)
    for name, _ in [*_LOG_TRIGGERS.values(), *_WRITTEN_TRIGGERS.values()]:
        conn.execute(
            q("DROP TRIGGER IF EXISTS {n} ON {s}.{t}").format(n=sql.Identifier(name), s=s, t=t)
        )
    for fn, log in ((LOG_FUNCTION, CHANGES), (WRITTEN_FUNCTION, WRITTEN)):
        conn.execute(q("DROP FUNCTION IF EXISTS {s}.{fn}()").format(s=s, fn=sql.Identifier(fn)))
        conn.execute(q("TRUNCATE {s}.{log}").format(s=s, log=sql.Identifier(log)))


# ------------------------------------------------------------------ the archive


def freeze(conn: psycopg.Connection[Any], schema: str, archive: str, view: str) -> None:
    """Refuse every write to the archive: a rollback relies on it holding exactly the rows
    of the cutover (PostgreSQL re-resolves the name of a statement that waited on the
    switch's lock, so such a statement reaches the view, not the archive; this catches a
    writer that names the archive itself)."""
    s, a = sql.Identifier(schema), sql.Identifier(archive)
    message = f"{archive} is the archive of the cut-over legacy table: write {view}"
    body = q("BEGIN RAISE EXCEPTION {m} USING ERRCODE = 'read_only_sql_transaction'; END").format(
        m=sql.Literal(message)
    )
    conn.execute(
        q(
            "CREATE OR REPLACE FUNCTION {s}.{fn}() RETURNS trigger LANGUAGE plpgsql AS {body}"
        ).format(s=s, fn=sql.Identifier(FROZEN_FUNCTION), body=sql.Literal(body.as_string(None)))
    )
    conn.execute(
        q(
            "CREATE TRIGGER replicator_archive_frozen BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE"
            " ON {s}.{a} FOR EACH STATEMENT EXECUTE FUNCTION {s}.{fn}()"
        ).format(s=s, a=a, fn=sql.Identifier(FROZEN_FUNCTION))
    )


def thaw(conn: psycopg.Connection[Any], schema: str, archive: str) -> None:
    s = sql.Identifier(schema)
    conn.execute(
        q("DROP TRIGGER IF EXISTS replicator_archive_frozen ON {s}.{a}").format(
            s=s, a=sql.Identifier(archive)
        )
    )
    conn.execute(
        q("DROP FUNCTION IF EXISTS {s}.{fn}()").format(s=s, fn=sql.Identifier(FROZEN_FUNCTION))
    )
