"""``replicator cutover``: the plan's phases 3 and 4 in one transaction, while the
application keeps writing; the time writers wait depends on the last moments' changes,
not on the size of the table.

The switch, as the tables' owner, on one connection (a session that cannot outlive its
client: db/locks.py ``holder_session``):

0. Outside any long lock.  Under a brief ``SHARE ROW EXCLUSIVE`` lock of both tables
   (tried with a short timeout, as every lock here), statement triggers start the
   pending log (``replicator_cutover_pending``): from then on every id written in
   ``workflow_processes`` or in ``workflow_runs`` is recorded, in the writing
   transaction (the triggers an interrupted cutover left are removed first).  Then the
   whole tables are checked (a row the mapping refuses stops the cutover, nothing
   changed) and compared, slice by slice, free of the session's ``statement_timeout``
   (as long as the table needs, progress said); every row they disagree on joins the log.
   Why only the logged rows need a look later: take a row r not in the log when the
   switch locks.  Its source row was not written since the triggers began (else it is
   logged), nor its target row since the comparison's snapshot (same), and at that
   snapshot the two were equal (else it is logged).  So they are equal still.
1. ``LOCK workflow_processes IN ACCESS EXCLUSIVE MODE``.  Steps 1-5 are one try under
   a short ``lock_timeout`` (db/locks.py ``bounded``): a lock the try is not granted in
   time (here, in step 3, or by any statement after) gives back everything it took, and
   the switch is tried again after a pause; a long transaction on either table makes the
   switch wait and try again, never makes every writer queue behind it for long.  From
   here no write to the legacy table commits.
2. Drain: the logged rows of the mapped legacy table are compared with ``workflow_runs``
   (by primary key); with a ``drain_timeout_s`` the replicator may keep applying until
   they are equal, for at most that long (by default the switch does not wait: step 4
   writes what the stream has not delivered, the result is the same, writers wait less).
3. ``LOCK workflow_runs_versions IN EXCLUSIVE MODE``, ``LOCK workflow_runs IN ACCESS
   EXCLUSIVE MODE`` (the sink's own order: versions, rows, positions; so no deadlock with
   a batch in flight; the strongest lock step 5 needs, taken at once), then the stream is
   closed (every partition's position becomes the closed marker, checkpoint.py invariant
   3): a batch that did not commit before this point never will.
4. Both tables are now still.  Whatever logged row the stream had not delivered is
   written from the legacy table by the SQL mapping (counted as ``repaired``), logged
   rows the target has and the source has not are deleted, and their versions recorded
   as of now (versions.py): every change committed before step 1 is in ``workflow_runs``,
   whatever the stream's delay.  A logged row the mapping refuses aborts the switch.
5. The legacy table becomes ``workflow_processes_archive`` (frozen: writes are refused),
   the compatibility view takes its name (legacy columns, types, defaults and grants;
   INSTEAD OF triggers apply the mapping, a rule refuses ``INSERT ... ON CONFLICT``, a
   row trigger on ``workflow_runs`` records the ids rows are moved away from: legacy.py),
   the pending log ends, statement triggers on ``workflow_runs`` start the change log a
   rollback needs (the ids and the columns written), the cutover is recorded; COMMIT.
   Both tables are counted after the commit (the archive is frozen).

A statement that waited on the lock of step 1 resolves the name again when it gets the
lock (PostgreSQL re-checks a relation name after waiting, and re-plans a prepared
statement whose relation changed): it writes the view, so ``workflow_runs``.  Writers
and readers of ``workflow_processes`` wait from step 1 to the commit: ``blocked_ms``.
A cutover that fails removes the pending log's triggers again (when a long transaction
keeps it from them, it leaves them doing nothing; the next cutover removes them first).

After the commit (:func:`finish`, also what a second ``cutover`` does when the first
could not finish): the connector is deleted and its slot dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from replicator.clients.connect import ConnectClient, load_connector_file
from replicator.cutover import catalog, compare, objects, pending
from replicator.cutover.legacy import no_upsert_rule, view_select, write_function
from replicator.cutover.readiness import ARCHIVE
from replicator.db.connect import connect, mapped_errors
from replicator.db.locks import bounded, holder_session, take
from replicator.db.slot import drop_slot
from replicator.errors import Refused, TerminalError
from replicator.mapping.columns import SOURCE_TABLE, TARGET_COLUMNS
from replicator.mapping.sql import MAPPED, upsert_tail
from replicator.settings import Settings
from replicator.stream.apply import generations, versions
from replicator.stream.apply.checkpoint import Checkpoint
from replicator.stream.source.ends import probe_ends

log = logging.getLogger("replicator.cutover")
q = sql.SQL
Say = Callable[[str], None]


@dataclass
class Switched:
    lsn: str
    source_rows: int
    target_rows: int
    blocked_ms: int
    drained: bool
    repaired: int
    lock_attempts: int
    grants: int


def cut_over(
    settings: Settings,
    *,
    drain_timeout_s: float = 0.0,
    lock_timeout_s: float = 2.0,
    attempts: int = 15,
    say: Say = log.info,
) -> Switched:
    """Steps 0-5 of the module docstring; nothing is changed when it raises.  ``say``
    hears how step 0's comparison goes."""
    admin = settings.as_admin()
    target = settings.target_table
    partitions = sorted(probe_ends(settings.kafka_bootstrap, settings.topic, settings.kafka_config))
    session = holder_session(drain_timeout_s + 300)
    locking = (lock_timeout_s, attempts)
    with (
        connect(
            admin.target_dsn.get_secret_value(), "the database", autocommit=False, **session
        ) as conn,
        mapped_errors("cut over"),
    ):
        objects.ensure_state(conn, service_role(settings))
        conn.commit()
        schema = catalog.schema_of(conn, SOURCE_TABLE)
        pending.prepare(conn, schema, target, locking, say)
        try:
            switched, tries = bounded(
                conn,
                f"{SOURCE_TABLE} and {target}",
                *locking,
                lambda: _switch(conn, settings, schema, partitions, drain_timeout_s),
            )
            switched.lock_attempts = tries
        except BaseException:
            conn.rollback()
            pending.unprepare(conn, schema, target, locking)
            raise
        s = sql.Identifier(schema)
        counts = [
            conn.execute(
                q("SELECT count(*) FROM {}.{}").format(s, sql.Identifier(name))
            ).fetchone()[0]  # type: ignore[index]  # an aggregate or a function call: always one row
            for name in (ARCHIVE, target)
        ]
        objects.record_counts(conn, SOURCE_TABLE, counts[0], counts[1])
        conn.commit()
    switched.source_rows, switched.target_rows = counts
    return switched


def _switch(
    conn: psycopg.Connection[Any],
    settings: Settings,
    schema: str,
    partitions: list[int],
    drain_timeout_s: float,
) -> Switched:
    """Steps 1-5, one try of :func:`bounded` (every lock wait in it is short; a try that
    is not granted one in time gives back everything, writers go on, and the switch is
    tried again): everything under the lock costs what the pending log holds, not what
    the tables hold."""
    target, logged = settings.target_table, pending.relation(schema)
    s = sql.Identifier(schema)
    wp, wr = sql.Identifier(SOURCE_TABLE), sql.Identifier(target)
    take(conn, q("{}.{}").format(s, wp), "ACCESS EXCLUSIVE")
    blocked_from = time.monotonic()
    (lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
    bad = [r[0] for r in conn.execute(compare.unmappable(schema, logged))]
    if bad:
        raise TerminalError(
            f"{len(bad)} legacy rows cannot be mapped (e.g. {bad[:3]}); nothing changed"
        )
    count = q("SELECT count(*) FROM ({}) AS d").format(compare.differing(schema, target, logged))
    drained = False
    while True:  # checked at least once; waited for only as long as asked
        if conn.execute(count).fetchone() == (0,):
            drained = True
            break
        if time.monotonic() - blocked_from >= drain_timeout_s:
            break
        time.sleep(0.05)
    ver = sql.Identifier(f"{target}_versions")
    take(conn, q("{}.{}").format(s, ver), "EXCLUSIVE")  # the sink's order: versions, rows
    take(conn, q("{}.{}").format(s, wr), "ACCESS EXCLUSIVE")  # the triggers dropped below
    held = Checkpoint(settings.offsets_table, target).close(conn, settings.topic, partitions)
    repaired = _repair(conn, schema, target, settings.topic)
    legacy = catalog.columns(conn, SOURCE_TABLE)
    conn.execute(
        q("ALTER TABLE {s}.{t} RENAME TO {a}").format(s=s, t=wp, a=sql.Identifier(ARCHIVE))
    )
    grants = _create_view(conn, schema, target, legacy)
    objects.freeze(conn, schema, ARCHIVE, SOURCE_TABLE)
    objects.unwatch_pending(conn, schema, ARCHIVE, target)
    objects.log_changes(conn, schema, target)
    blocked_ms = int((time.monotonic() - blocked_from) * 1000)
    names = (SOURCE_TABLE, target, ARCHIVE)
    objects.record_cutover(conn, names, lsn, (0, 0), blocked_ms, repaired, held)
    conn.commit()
    blocked_ms = int((time.monotonic() - blocked_from) * 1000)
    return Switched(lsn, 0, 0, blocked_ms, drained, repaired, 0, grants)


def _repair(conn: psycopg.Connection[Any], schema: str, target: str, topic: str) -> int:
    """Step 4: make the still target equal to the still source for the pending rows (every
    other row is equal: step 0); the rows written."""
    s, wr = sql.Identifier(schema), sql.Identifier(target)
    conn.execute(
        q("CREATE TEMP TABLE replicator_cutover_diff ON COMMIT DROP AS {}").format(
            compare.differing(schema, target, pending.relation(schema))
        )
    )
    # a few rows: the planner must know it, or it joins them to the whole tables by hash
    conn.execute("ANALYZE replicator_cutover_diff")
    conn.execute(
        q(
            "INSERT INTO {s}.{t} AS t ({cols}) SELECT {mapped} FROM replicator_cutover_diff d"
            " JOIN LATERAL (SELECT * FROM {s}.{wp} AS p WHERE p.id = d.run_id) AS p ON true"
            " WHERE NOT d.gone {tail}"
        ).format(
            s=s,
            t=wr,
            wp=sql.Identifier(SOURCE_TABLE),
            cols=q(", ").join(map(sql.Identifier, TARGET_COLUMNS)),
            mapped=q(", ").join(MAPPED[c] for c in TARGET_COLUMNS),
            tail=upsert_tail(),
        )
    )
    conn.execute(
        q(
            "DELETE FROM {s}.{t} AS t USING replicator_cutover_diff d"
            " WHERE d.run_id = t.run_id AND d.gone"
        ).format(s=s, t=wr)
    )
    versions.as_of_now(
        conn,
        schema,
        f"{target}_versions",
        q("SELECT run_id, gone FROM replicator_cutover_diff"),
        generations.latest(conn, topic),
    )
    (n,) = conn.execute("SELECT count(*) FROM replicator_cutover_diff").fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
    return int(n)


def _create_view(
    conn: psycopg.Connection[Any], schema: str, target: str, legacy: list[catalog.Column]
) -> int:
    """The compatibility view in the legacy table's place, with its write function, the rule
    that refuses ``INSERT ... ON CONFLICT`` and the record of moved ids (legacy.py); the
    grants copied."""
    s, v = sql.Identifier(schema), sql.Identifier(SOURCE_TABLE)
    shape = [(c.name, c.type) for c in legacy]
    conn.execute(
        q("CREATE VIEW {s}.{v} AS {select}").format(
            s=s, v=v, select=view_select(shape, schema, target)
        )
    )
    for column in legacy:
        if column.default is not None:
            conn.execute(
                q("ALTER VIEW {s}.{v} ALTER COLUMN {c} SET DEFAULT {d}").format(
                    s=s, v=v, c=sql.Identifier(column.name), d=q(column.default)
                )
            )
    conn.execute(write_function(objects.WRITE_FUNCTION, shape, schema, target, SOURCE_TABLE))
    conn.execute(
        q(
            "CREATE TRIGGER replicator_compat_write INSTEAD OF INSERT OR UPDATE OR DELETE"
            " ON {s}.{v} FOR EACH ROW EXECUTE FUNCTION {s}.{fn}()"
        ).format(s=s, v=v, fn=sql.Identifier(objects.WRITE_FUNCTION))
    )
    for statement in no_upsert_rule(schema, SOURCE_TABLE):
        conn.execute(statement)
    objects.watch_moves(conn, schema, target)
    return catalog.copy_grants(conn, ARCHIVE, SOURCE_TABLE)


def service_role(settings: Settings) -> str | None:
    """The role the service's target DSN logs in as (None: libpq's default, the OS user)."""
    dsn = settings.target_dsn.get_secret_value()
    return psycopg.conninfo.conninfo_to_dict(dsn).get("user")  # type: ignore[return-value]  # libpq's conninfo values are strings


def finish(settings: Settings, say: Say) -> bool:
    """After the commit: delete the connector and drop its slot (an abandoned slot holds
    WAL forever).  True when both are gone."""

    name = load_connector_file(settings.connector_file)["name"]
    done = True
    if settings.connect_url:
        client = ConnectClient(settings.connect_url)
        if name in client.names():
            client.delete(name)
            say(f"connector {name} deleted")
    else:
        say("REPLICATOR_CONNECT_URL is not set: delete the connector yourself")
        done = False
    if not drop_slot(settings.slot_dsn, settings.slot_name, say):
        say(f"replication slot {settings.slot_name} is still in use: run cutover again")
        return False
    return done


def finalize(settings: Settings) -> objects.Record:
    """End the rollback window: the change log and the publication are dropped; the view,
    the archive (still frozen), the closed positions and the record stay."""

    publication = load_connector_file(settings.connector_file)["config"].get(
        "publication.name", settings.slot_name
    )
    admin = settings.as_admin()
    with (
        connect(admin.target_dsn.get_secret_value(), "the database", autocommit=False) as conn,
        mapped_errors("finalize"),
    ):
        record = objects.latest(conn, SOURCE_TABLE)
        if record is None or record.state != "cut_over":
            raise Refused(
                f"cutover --finalize: nothing to finalize, {SOURCE_TABLE} is "
                + ("not cut over" if record is None else record.state.replace("_", " "))
            )
        schema = catalog.schema_of(conn, settings.target_table)
        objects.ensure_state(conn)  # the logs a cutover made by an earlier version lacks
        objects.drop_change_log(conn, schema, settings.target_table)
        conn.execute(q("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication)))
        objects.record_finalized(conn, record)
        conn.commit()
    # the cutover's finish drops the slot; if it could not, nothing may keep retaining WAL
    drop_slot(settings.slot_dsn, settings.slot_name, log.info)
    return record
