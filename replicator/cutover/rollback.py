"""``replicator rollback``: the plan's rollback without a backup restore, while the
application keeps writing.

Before the transaction the replication slot is created again (as the owner, with the
slot's name from the settings): it starts before the switch back, so every change from
the switch on is in it.  Then, in one transaction:

1. ``LOCK`` the view and the archive (``ACCESS EXCLUSIVE``, short ``lock_timeout``,
   retried), then ``workflow_runs_versions, workflow_runs IN EXCLUSIVE MODE`` (writers
   of the new table wait too).
2. The view and its function go; the archive is thawed and renamed back to
   ``workflow_processes`` FIRST, so that the rows written next are decoded under the
   legacy name (the connector includes the table by name).
3. Only the rows in the change log (every run_id written in ``workflow_runs`` since the
   cutover) are touched: those still in ``workflow_runs`` are written in their legacy form
   (the view's inverse mapping), those gone are deleted.  Every other row stays exactly
   as the cutover archived it (a NULL ``status``, a REAL ``total_cost``), and so does
   every column of a touched row that no write changed (the written log; :func:`restored`).
4. Those rows of ``workflow_runs`` are written again from the legacy rows through the
   forward mapping, and their versions recorded as of now (versions.py): the target equals the
   mapped source at once, and the stream's copies of step 3's changes (older LSNs) are
   skipped by the order guard.
5. The change log and the record of moved ids are dropped, the stream's positions handed
   back (the closed markers replaced by the positions the cutover saved), the rollback
   recorded; COMMIT.

After the commit the connector is registered again with ``snapshot.mode=no_data``: no
new full snapshot; it streams from the slot of the first step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from replicator.clients.connect import ConnectClient, load_connector_file
from replicator.cutover import catalog, objects
from replicator.cutover.legacy import TARGET_OF, checked_type, inverse
from replicator.cutover.switch import Say
from replicator.db.connect import connect, mapped_errors
from replicator.db.locks import holder_session, lock
from replicator.db.slot import drop_slot
from replicator.errors import ConfigurationError
from replicator.mapping.columns import JSON_COLUMNS, SOURCE_TABLE, TARGET_COLUMNS
from replicator.mapping.sql import MAPPED, comparable, problem, upsert_tail
from replicator.settings import Settings
from replicator.stream.apply import generations, versions
from replicator.stream.apply.checkpoint import Checkpoint

q = sql.SQL


@dataclass
class RolledBack:
    lsn: str
    restored: int
    blocked_ms: int
    lock_attempts: int


def create_slot(settings: Settings, say: Say) -> bool:
    """The connector's slot, unless it exists (a rollback run again); True when it was
    created here."""
    with (
        connect(settings.slot_dsn, "the source database", autocommit=True) as conn,
        mapped_errors("create the slot"),
    ):
        found = conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [settings.slot_name]
        ).fetchone()
        if found is None:
            conn.execute(
                "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [settings.slot_name]
            )
            say(f"replication slot {settings.slot_name} created")
        return found is None


def roll_back_with_slot(
    settings: Settings, say: Say, *, lock_timeout_s: float = 2.0, attempts: int = 15
) -> RolledBack:
    """The slot first (every change after the switch back must be in it: it cannot be
    created inside the rollback's transaction, which writes), then the rollback; a slot
    created here is dropped again when the rollback does not commit, so a failed
    rollback leaves nothing retaining WAL."""
    created = create_slot(settings, say)
    try:
        return roll_back(settings, lock_timeout_s=lock_timeout_s, attempts=attempts)
    except BaseException:
        if created:
            drop_slot(settings.slot_dsn, settings.slot_name, say)
        raise


def unfinished(settings: Settings) -> bool:
    """A rollback committed but its last step, registering the connector again, did not
    finish (``rollback`` run again resumes it)."""
    admin = settings.as_admin()
    with (
        connect(admin.target_dsn.get_secret_value(), "the database") as conn,
        mapped_errors("read the cutover record"),
    ):
        record = objects.latest(conn, SOURCE_TABLE)
    if record is None or record.state != "rolled_back" or not settings.connect_url:
        return False
    return (
        load_connector_file(settings.connector_file)["name"]
        not in ConnectClient(settings.connect_url).names()
    )


def roll_back(settings: Settings, *, lock_timeout_s: float = 2.0, attempts: int = 15) -> RolledBack:
    """Steps 1-5 of the module docstring; nothing is changed when it raises."""
    admin = settings.as_admin()
    target = settings.target_table
    checkpoint = Checkpoint(settings.offsets_table, target)
    with (
        connect(
            admin.target_dsn.get_secret_value(),
            "the database",
            autocommit=False,
            **holder_session(300),
        ) as conn,
        mapped_errors("roll back"),
    ):
        record = objects.latest(conn, SOURCE_TABLE)
        if record is None or record.state != "cut_over":
            raise ConfigurationError(f"{SOURCE_TABLE} is not cut over: nothing to roll back")
        schema = catalog.schema_of(conn, SOURCE_TABLE)
        objects.ensure_state(conn)  # the logs a cutover made by an earlier version lacks
        conn.commit()
        s = sql.Identifier(schema)
        wp, wr = sql.Identifier(SOURCE_TABLE), sql.Identifier(target)
        archive = sql.Identifier(record.archive_table)
        tries = lock(
            conn, q("{s}.{v}, {s}.{a}").format(s=s, v=wp, a=archive), lock_timeout_s, attempts
        )
        blocked_from = time.monotonic()
        ver = sql.Identifier(f"{target}_versions")
        conn.execute(q("LOCK TABLE {s}.{v}, {s}.{t} IN EXCLUSIVE MODE").format(s=s, v=ver, t=wr))
        legacy = catalog.columns(conn, record.archive_table)
        conn.execute(q("DROP VIEW {s}.{v}").format(s=s, v=wp))
        conn.execute(
            q("DROP FUNCTION {s}.{f}()").format(s=s, f=sql.Identifier(objects.WRITE_FUNCTION))
        )
        objects.thaw(conn, schema, record.archive_table)
        conn.execute(q("ALTER TABLE {s}.{a} RENAME TO {v}").format(s=s, a=archive, v=wp))
        log = q("{}.{}").format(s, sql.Identifier(objects.CHANGES))
        _restore(conn, schema, target, legacy, log, settings.topic)
        (restored,) = conn.execute(q("SELECT count(*) FROM {}").format(log)).fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
        objects.drop_change_log(conn, schema, target)
        objects.unwatch_moves(conn, schema, target)
        checkpoint.reopen(conn, settings.topic, record.positions)
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()  # type: ignore[misc]  # an aggregate or a function call: always one row
        blocked_ms = int((time.monotonic() - blocked_from) * 1000)
        objects.record_rollback(conn, record, lsn, blocked_ms, int(restored))
        conn.commit()
        blocked_ms = int((time.monotonic() - blocked_from) * 1000)
    return RolledBack(lsn, int(restored), blocked_ms, tries)


def _restore(
    conn: psycopg.Connection[Any],
    schema: str,
    target: str,
    legacy: list[catalog.Column],
    log: sql.Composed,
    topic: str,
) -> None:
    """Steps 3 and 4: the rows of the change log, in the legacy table and back."""
    s, wp, wr = sql.Identifier(schema), sql.Identifier(SOURCE_TABLE), sql.Identifier(target)
    conn.execute(
        q(
            "DELETE FROM {s}.{v} AS p USING {log} AS l WHERE p.id = l.run_id"
            " AND NOT EXISTS (SELECT FROM {s}.{t} AS t WHERE t.run_id = l.run_id)"
        ).format(s=s, v=wp, log=log, t=wr)
    )
    names = [sql.Identifier(c.name) for c in legacy]
    conn.execute(
        q(
            "INSERT INTO {s}.{v} AS w ({cols}) SELECT {items} FROM {s}.{t} AS t"
            " JOIN {log} AS l ON l.run_id = t.run_id LEFT JOIN {s}.{v} AS p ON p.id = t.run_id"
            " LEFT JOIN {s}.{written} AS x ON x.run_id = t.run_id"
            " ON CONFLICT (id) DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})"
        ).format(
            s=s,
            v=wp,
            t=wr,
            log=log,
            written=sql.Identifier(objects.WRITTEN),
            cols=q(", ").join(names),
            items=restored(legacy),
            sets=q(", ").join(q("{c} = EXCLUDED.{c}").format(c=n) for n in names[1:]),
            old=q(", ").join(q("w.{}").format(n) for n in names[1:]),
            new=q(", ").join(q("EXCLUDED.{}").format(n) for n in names[1:]),
        )
    )
    conn.execute(
        q(
            "INSERT INTO {s}.{t} AS t ({cols}) SELECT {mapped} FROM {s}.{v} AS p"
            " JOIN {log} AS l ON l.run_id = p.id WHERE {why} IS NULL {tail}"
        ).format(
            s=s,
            t=wr,
            v=wp,
            log=log,
            cols=q(", ").join(map(sql.Identifier, TARGET_COLUMNS)),
            mapped=q(", ").join(MAPPED[c] for c in TARGET_COLUMNS),
            why=problem(),
            tail=upsert_tail(),
        )
    )
    versions.as_of_now(
        conn,
        schema,
        f"{target}_versions",
        q(
            "SELECT l.run_id, NOT EXISTS (SELECT FROM {s}.{v} AS p WHERE p.id = l.run_id)"
            " FROM {log} AS l"
        ).format(s=s, v=wp, log=log),
        generations.latest(conn, topic),
    )


def restored(legacy: list[catalog.Column]) -> sql.Composed:
    """The legacy columns of a logged row ``t`` of ``workflow_runs``, over its archived row
    ``p`` and its record ``x`` in the written log (either may be missing).  A column keeps
    its archived value where no write since the cutover changed its target column and the
    target still holds that value's mapping (so a NULL ``status`` and a REAL's exact value
    come back for a row whose other columns the application wrote); any other column, and
    every column of a row the archive lacks, is the view's inverse mapping.  Without a
    record (a cutover made before the log existed) only the second test decides."""
    if not legacy or legacy[0].name != "id" or {c.name for c in legacy} != set(TARGET_OF):
        raise ValueError(f"the legacy columns are not the mapping's: {legacy}")
    items: list[sql.Composable] = [q("t.run_id AS id")]
    for column in legacy[1:]:
        target = TARGET_OF[column.name]
        items.append(
            q(
                "CASE WHEN p.id IS NOT NULL AND NOT coalesce({c} = ANY(x.columns), false)"
                " AND ({mapped}){cast} IS NOT DISTINCT FROM {now} THEN p.{name}"
                " ELSE ({inverse})::{type} END AS {name}"
            ).format(
                c=sql.Literal(target),
                mapped=MAPPED[target],
                cast=q("::text" if target in JSON_COLUMNS else ""),
                now=comparable("t", target),
                name=sql.Identifier(column.name),
                inverse=inverse(column.name),
                type=q(checked_type(column.type)),
            )
        )
    return q(", ").join(items)


def reconnect(settings: Settings, say: Say, timeout_s: float = 60.0) -> None:
    """Register the connector again, streaming from the slot (no new full snapshot)."""

    if not settings.connect_url:
        raise ConfigurationError("set REPLICATOR_CONNECT_URL to register the connector again")
    spec = load_connector_file(settings.connector_file)
    spec["config"]["snapshot.mode"] = "no_data"
    client = ConnectClient(settings.connect_url)
    client.apply(spec["name"], spec["config"], timeout=timeout_s)
    say(f"connector {spec['name']} running again (snapshot.mode=no_data: no new snapshot)")
