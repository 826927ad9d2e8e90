"""The cutover's pending log: the rows its switch must look at under the lock.

Started before the switch (:func:`prepare`), it holds every id written in
``workflow_processes`` or ``workflow_runs`` since, and every row the two tables disagreed
on when they were compared whole; the switch compares only these under its lock
(switch.py, step 0, has the argument).  Under a writing application the log grows with
the time the whole comparison takes, so :func:`narrow` takes out, in small REPEATABLE
READ transactions, the logged rows that are equal again: a row is taken out only in the
snapshot in which it was seen equal, and a write logged since makes the transaction fail
(the triggers write an id already logged again, a new row version: 40001; or a deadlock
with a writer logging several ids) instead of being lost; that chunk is tried again.
What is left when the switch locks is what was written in the last moments.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from replicator.cutover import compare, objects
from replicator.db.locks import bounded, lock, take
from replicator.errors import TerminalError
from replicator.mapping.columns import SOURCE_TABLE

log = logging.getLogger("replicator.cutover")
q = sql.SQL
Say = Callable[[str], None]

#: Rows compared per REPEATABLE READ transaction of :func:`narrow`.
CHUNK = 1000
#: :func:`narrow` stops once this few rows are left, or after ``PASSES`` passes.
SMALL, PASSES = 100, 6
#: Legacy ids per slice of the whole comparison (:func:`compare_whole`).
SLICE = 100_000


def relation(schema: str) -> sql.Composed:
    return q("{}.{}").format(sql.Identifier(schema), sql.Identifier(objects.PENDING))


def _both(schema: str, target: str) -> sql.Composed:
    s = sql.Identifier(schema)
    return q("{s}.{a}, {s}.{b}").format(
        s=s, a=sql.Identifier(SOURCE_TABLE), b=sql.Identifier(target)
    )


def prepare(
    conn: psycopg.Connection[Any],
    schema: str,
    target: str,
    locking: tuple[float, int],
    say: Say = log.info,
) -> None:
    """Step 0 of the switch, outside its lock: the triggers an interrupted cutover left are
    removed; from a brief lock on both tables on, every id written in either is logged;
    then the whole tables are checked (a row the mapping refuses stops the cutover here)
    and compared, slice by slice, every row they disagree on is logged too, and the log is
    narrowed.  On failure the triggers are removed again (:func:`unprepare`)."""
    clear(conn, schema, target, locking, say)
    lock(conn, _both(schema, target), *locking, mode="SHARE ROW EXCLUSIVE")
    objects.watch_pending(conn, schema, SOURCE_TABLE, target)
    conn.commit()
    try:
        compare_whole(conn, schema, target, say)
        narrow(conn, schema, target)
    except BaseException:
        conn.rollback()
        unprepare(conn, schema, target, locking)
        raise


def compare_whole(conn: psycopg.Connection[Any], schema: str, target: str, say: Say) -> None:
    """Check and compare the whole tables in slices of ``SLICE`` legacy ids (the last one
    open-ended, so the target's rows past the legacy table's last id are compared too),
    each slice's statements free of the session's ``statement_timeout``: the comparison
    takes as long as the table needs, saying how far it got.  Each slice is its own
    snapshot; that is enough, since every write since the triggers began is logged
    (switch.py, step 0)."""
    wp = q("{}.{}").format(sql.Identifier(schema), sql.Identifier(SOURCE_TABLE))
    (total,) = conn.execute(  # type: ignore[misc]  # an aggregate or a function call: always one row
        "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
        [f"{schema}.{SOURCE_TABLE}"],
    ).fetchone()
    after: str | None = None
    done, started, said = 0, time.monotonic(), 0.0
    while True:
        conn.execute("SET LOCAL statement_timeout = 0")
        bound = conn.execute(
            q("SELECT id FROM {wp} WHERE {after} ORDER BY id OFFSET {n} LIMIT 1").format(
                wp=wp, after=compare.within(q("id"), (after, None)), n=sql.Literal(SLICE - 1)
            )
        ).fetchone()
        ids = (after, None if bound is None else str(bound[0]))
        bad = [r[0] for r in conn.execute(compare.unmappable(schema, ids=ids))]
        conn.commit()
        if bad:
            raise TerminalError(
                f"{len(bad)} legacy rows cannot be mapped (e.g. {bad[:3]}); nothing changed"
            )
        _log_differing(conn, schema, target, ids)
        done += SLICE
        if ids[1] is None or time.monotonic() - said >= 5:
            said = time.monotonic()
            shown = f"{done:,} of about {total:,}" if total > done else f"{done:,}"
            shown = shown if ids[1] else "all"
            say(f"compared {shown} legacy rows ({said - started:.0f} s)")
        if ids[1] is None:
            return
        after = ids[1]


def _log_differing(
    conn: psycopg.Connection[Any], schema: str, target: str, ids: compare.Slice
) -> None:
    """Log every row of the slice ``ids`` the two tables disagree on now.  The
    application's and the stream's triggers log ids at the same time: a deadlock with one
    of them (a writer logging several ids in several statements) costs this statement a
    retry, nothing else."""
    statement = q(
        "INSERT INTO {k} SELECT run_id FROM ({d}) AS d ORDER BY 1 ON CONFLICT DO NOTHING"
    ).format(k=relation(schema), d=compare.differing(schema, target, ids=ids))
    for attempt in range(1, 6):
        try:
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute(statement)
            conn.commit()
            return
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            conn.rollback()
            if attempt == 5:
                raise
            log.warning("pending log: deadlock with a writer; trying again")


def narrow(conn: psycopg.Connection[Any], schema: str, target: str) -> int:
    """Take the rows that are equal again out of the log (module docstring); how many
    are left."""
    k = relation(schema)
    chunk = q("SELECT run_id FROM {k} WHERE run_id > %(after)s ORDER BY run_id LIMIT {n}").format(
        k=k, n=sql.Literal(CHUNK)
    )
    # the rows to take out are locked in key order, as the writers' triggers log them
    take = q(
        "WITH c AS MATERIALIZED ({chunk}), d AS MATERIALIZED ({diff}),"
        " equal AS MATERIALIZED (SELECT p.run_id FROM {k} AS p JOIN c ON c.run_id = p.run_id"
        " WHERE NOT EXISTS (SELECT FROM d WHERE d.run_id = c.run_id)"
        " ORDER BY p.run_id FOR UPDATE OF p)"
        " DELETE FROM {k} AS p USING equal WHERE p.run_id = equal.run_id"
    ).format(chunk=chunk, diff=compare.differing(schema, target, q("c")), k=k)
    last = q("SELECT max(run_id) FROM ({chunk}) AS c").format(chunk=chunk)
    left = -1
    for _ in range(PASSES):
        after, tries = "", 0
        while True:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            (upto,) = conn.execute(last, {"after": after}).fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
            if upto is None:
                conn.commit()
                break
            try:
                conn.execute(take, {"after": after})
                conn.commit()
            except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected):
                # written meanwhile (or locked in another order by a writer's log): this
                # chunk again, a few times; what stays in the log is only compared again
                conn.rollback()
                tries += 1
                if tries < 5:
                    continue
            after, tries = upto, 0
        (left,) = conn.execute(q("SELECT count(*) FROM {}").format(k)).fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
        conn.commit()
        if left <= SMALL:
            break
    conn.execute(q("ANALYZE {}").format(k))  # the switch's plans must know the log is small
    conn.commit()
    log.info("pending rows before the switch", extra={"rows": left})
    return left


def unprepare(
    conn: psycopg.Connection[Any], schema: str, target: str, locking: tuple[float, int]
) -> bool:
    """The pending log ended (a cutover that did not happen): its functions made to do
    nothing at once (no lock on the tables), then its triggers dropped (:func:`_drop`).
    False when a long transaction kept the tables through every try: the triggers are left,
    inert; ``cutover --dry-run`` lists them and the next cutover removes them first."""
    objects.silence_pending(conn, schema)
    conn.commit()
    try:
        _drop(conn, schema, target, locking)
    except TerminalError as exc:
        log.warning(
            "the pending log's triggers are left, doing nothing; the next cutover removes them: %s",
            exc,
        )
        return False
    return True


def clear(
    conn: psycopg.Connection[Any],
    schema: str,
    target: str,
    locking: tuple[float, int],
    say: Say = log.info,
) -> None:
    """Remove the pending log's triggers an interrupted cutover left (killed before it
    could remove them, or kept from it by a long transaction); raises
    :class:`TerminalError` when another cutover is running (they are its own)."""
    if not objects.claim(conn):
        conn.rollback()
        raise TerminalError(f"another cutover is running (process {objects.running(conn)})")
    left = objects.pending_left(conn, schema)
    conn.commit()
    if left:
        say(f"removing what an interrupted cutover left: {', '.join(left)}")
        _drop(conn, schema, target, locking)


def _drop(
    conn: psycopg.Connection[Any], schema: str, target: str, locking: tuple[float, int]
) -> None:
    """Drop the triggers and empty the log under bounded tries (db/locks.py).  ``DROP
    TRIGGER`` needs ``ACCESS EXCLUSIVE``: it is taken at once, on both tables and the log,
    never raised from a weaker lock, which would let an application's row lock in between
    and leave each waiting for the other."""

    def step() -> None:
        tables = q("{}, {}").format(_both(schema, target), relation(schema))
        take(conn, tables, "ACCESS EXCLUSIVE")
        objects.unwatch_pending(conn, schema, SOURCE_TABLE, target)
        conn.commit()

    bounded(conn, f"{SOURCE_TABLE} and {target}", *locking, step)
