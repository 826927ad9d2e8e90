"""``replicator cutover``: the plan's phases 3 and 4 in one transaction, while the
application keeps writing.

The switch, as the tables' owner, on one connection:

1. ``LOCK workflow_processes IN ACCESS EXCLUSIVE MODE`` with a short ``lock_timeout``,
   retried: a long transaction in the application makes the switch wait and try again,
   never makes every writer queue behind it for long.  From here no write to the legacy
   table commits, and every write that committed before is in the WAL.
2. Drain: the replicator keeps applying; the mapped legacy table is compared with
   ``workflow_runs`` (one set-based query) until they are equal, at most
   ``drain_timeout_s``.
3. ``LOCK workflow_runs_versions, workflow_runs IN EXCLUSIVE MODE`` (the sink's own order:
   versions, rows, positions; so no deadlock with a batch in flight), then the stream is
   closed (every partition's position becomes the closed marker, checkpoint.py invariant
   3): a batch that did not commit before this point never will.
4. Both tables are now still.  Whatever the stream had not delivered is written from the
   legacy table by the SQL mapping (counted as ``repaired``), rows the target has and
   the source has not are deleted, and their versions recorded: every change committed
   before step 1 is in ``workflow_runs``, whatever the stream's delay.  A row the mapping
   refuses aborts the switch (it would exist in neither table afterwards).
5. The legacy table becomes ``workflow_processes_archive`` (frozen: writes are refused),
   the compatibility view takes its name (legacy columns, types, defaults and grants;
   INSTEAD OF triggers apply the mapping), statement triggers on ``workflow_runs`` start
   the change log a rollback needs, the cutover is recorded; COMMIT.

A statement that waited on the lock of step 1 resolves the name again when it gets the
lock (PostgreSQL re-checks a relation name after waiting, and re-plans a prepared
statement whose relation changed): it writes the view, so ``workflow_runs``.  Writers
and readers of ``workflow_processes`` wait from step 1 to the commit: ``blocked_ms``.

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
from replicator.cutover import catalog, objects
from replicator.cutover.legacy import view_select, write_function
from replicator.cutover.readiness import ARCHIVE, unmappable
from replicator.db.connect import connect, mapped_errors
from replicator.db.locks import lock
from replicator.db.names import plain_identifier
from replicator.db.slot import drop_slot
from replicator.errors import ConfigurationError, TerminalError
from replicator.mapping.columns import SOURCE_TABLE, TARGET_COLUMNS
from replicator.mapping.sql import MAPPED, comparable, upsert_tail
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


def _mapped_source(schema: str) -> sql.Composed:
    return q("SELECT {cols} FROM {s}.{t} AS p").format(
        cols=q(", ").join(
            q("{} AS {}").format(MAPPED[c], sql.Identifier(c)) for c in TARGET_COLUMNS
        ),
        s=sql.Identifier(schema),
        t=sql.Identifier(SOURCE_TABLE),
    )


def differing(schema: str, target: str) -> sql.Composed:
    """``(run_id, gone)`` of every row where the mapped legacy table and ``target`` differ
    (``gone``: the target has a row the source has not)."""
    return q(
        "SELECT coalesce(s.run_id, t.run_id) AS run_id, s.run_id IS NULL AS gone"
        " FROM ({src}) AS s FULL JOIN {s}.{t} AS t ON t.run_id = s.run_id"
        " WHERE s.run_id IS NULL OR t.run_id IS NULL OR ({a}) IS DISTINCT FROM ({b})"
    ).format(
        src=_mapped_source(schema),
        s=sql.Identifier(schema),
        t=sql.Identifier(target),
        a=q(", ").join(comparable("s", c) for c in TARGET_COLUMNS[1:]),
        b=q(", ").join(comparable("t", c) for c in TARGET_COLUMNS[1:]),
    )


def cut_over(
    settings: Settings,
    *,
    drain_timeout_s: float = 10.0,
    lock_timeout_s: float = 2.0,
    attempts: int = 15,
) -> Switched:
    """Steps 1-5 of the module docstring; nothing is changed when it raises."""
    admin = settings.as_admin()
    target = settings.target_table
    partitions = sorted(probe_ends(settings.kafka_bootstrap, settings.topic, settings.kafka_config))
    checkpoint = Checkpoint(settings.offsets_table, target)
    with (
        connect(admin.target_dsn.get_secret_value(), "the database", autocommit=False) as conn,
        mapped_errors("cut over"),
    ):
        objects.ensure_state(conn)
        conn.commit()
        schema = catalog.schema_of(conn, SOURCE_TABLE)
        s = sql.Identifier(schema)
        wp, wr = sql.Identifier(SOURCE_TABLE), sql.Identifier(target)
        ver = sql.Identifier(f"{target}_versions")
        tries = lock(conn, q("{}.{}").format(s, wp), lock_timeout_s, attempts)
        blocked_from = time.monotonic()
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()  # type: ignore[misc]
        bad = unmappable(conn)
        if bad:
            conn.rollback()
            raise TerminalError(
                f"{len(bad)} legacy rows cannot be mapped (e.g. {bad[:3]}); nothing changed"
            )
        count = q("SELECT count(*) FROM ({}) AS d").format(differing(schema, target))
        drained = False
        while time.monotonic() - blocked_from < drain_timeout_s:
            if conn.execute(count).fetchone() == (0,):
                drained = True
                break
            time.sleep(0.05)
        conn.execute(
            q("LOCK TABLE {s}.{v}, {s}.{t} IN EXCLUSIVE MODE").format(s=s, v=ver, t=wr)
        )
        held = checkpoint.close(conn, settings.topic, partitions)
        repaired = _repair(conn, schema, target, settings.topic)
        (source_rows,) = conn.execute(
            q("SELECT count(*) FROM {s}.{t}").format(s=s, t=wp)
        ).fetchone()  # type: ignore[misc]
        (target_rows,) = conn.execute(
            q("SELECT count(*) FROM {s}.{t}").format(s=s, t=wr)
        ).fetchone()  # type: ignore[misc]
        legacy = catalog.columns(conn, SOURCE_TABLE)
        conn.execute(
            q("ALTER TABLE {s}.{t} RENAME TO {a}").format(s=s, t=wp, a=sql.Identifier(ARCHIVE))
        )
        grants = _create_view(conn, schema, target, legacy)
        objects.freeze(conn, schema, ARCHIVE, SOURCE_TABLE)
        objects.log_changes(conn, schema, target)
        blocked_ms = int((time.monotonic() - blocked_from) * 1000)
        objects.record_cutover(
            conn,
            (SOURCE_TABLE, target, ARCHIVE),
            lsn,
            (source_rows, target_rows),
            blocked_ms,
            repaired,
            held,
        )
        conn.commit()
        blocked_ms = int((time.monotonic() - blocked_from) * 1000)
    return Switched(lsn, source_rows, target_rows, blocked_ms, drained, repaired, tries, grants)


def _repair(conn: psycopg.Connection[Any], schema: str, target: str, topic: str) -> int:
    """Step 4: make the still target equal to the still source; the rows written."""
    s, wr = sql.Identifier(schema), sql.Identifier(target)
    conn.execute(
        q("CREATE TEMP TABLE replicator_cutover_diff ON COMMIT DROP AS {}").format(
            differing(schema, target)
        )
    )
    conn.execute(
        q(
            "INSERT INTO {s}.{t} AS t ({cols}) SELECT {mapped} FROM {s}.{wp} AS p"
            " JOIN replicator_cutover_diff d ON d.run_id = p.id AND NOT d.gone {tail}"
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
    (n,) = conn.execute("SELECT count(*) FROM replicator_cutover_diff").fetchone()  # type: ignore[misc]
    return int(n)


def _create_view(
    conn: psycopg.Connection[Any], schema: str, target: str, legacy: list[catalog.Column]
) -> int:
    """The compatibility view in the legacy table's place; the grants copied."""
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
    conn.execute(write_function(objects.WRITE_FUNCTION, shape, schema, target))
    conn.execute(
        q(
            "CREATE TRIGGER replicator_compat_write INSTEAD OF INSERT OR UPDATE OR DELETE"
            " ON {s}.{v} FOR EACH ROW EXECUTE FUNCTION {s}.{fn}()"
        ).format(s=s, v=v, fn=sql.Identifier(objects.WRITE_FUNCTION))
    )
    return catalog.copy_grants(conn, ARCHIVE, SOURCE_TABLE)


def finish(settings: Settings, say: Say) -> bool:
    """After the commit: delete the connector and drop its slot (an abandoned slot holds
    WAL forever).  True when both are gone."""

    name = load_connector_file(None)["name"]
    done = True
    if settings.connect_url:
        client = ConnectClient(settings.connect_url)
        if name in client.names():
            client.delete(name)
            say(f"connector {name} deleted")
    else:
        say("REPLICATOR_CONNECT_URL is not set: delete the connector yourself")
        done = False
    admin = settings.as_admin()
    dsn = (admin.source_dsn or admin.target_dsn).get_secret_value()
    if not drop_slot(dsn, settings.slot_name, say):
        say(f"replication slot {settings.slot_name} is still in use: run cutover again")
        return False
    return done


def readers_view(settings: Settings, name: str) -> int:
    """Phase 3 on its own: the compatibility view, read-only, under ``name``, while the
    legacy table still takes the writes; SELECT granted to every role that may read the
    legacy table.  The number of grants."""
    plain_identifier(name, "view name")
    if name in (SOURCE_TABLE, ARCHIVE, settings.target_table):
        raise ConfigurationError(f"{name!r} is taken: choose another name for the readers' view")
    admin = settings.as_admin()
    with (
        connect(admin.target_dsn.get_secret_value(), "the database", autocommit=False) as conn,
        mapped_errors("create the view"),
    ):
        if catalog.relkind(conn, SOURCE_TABLE) != "r":
            raise ConfigurationError(f"{SOURCE_TABLE} is not a table: the cutover happened already")
        schema = catalog.schema_of(conn, SOURCE_TABLE)
        shape = [(c.name, c.type) for c in catalog.columns(conn, SOURCE_TABLE)]
        conn.execute(
            q("CREATE OR REPLACE VIEW {s}.{v} AS {select}").format(
                s=sql.Identifier(schema),
                v=sql.Identifier(name),
                select=view_select(shape, schema, settings.target_table),
            )
        )
        grants = catalog.copy_grants(conn, SOURCE_TABLE, name, only="SELECT")
        conn.commit()
    return grants


def finalize(settings: Settings) -> objects.Record:
    """End the rollback window: the change log and the publication are dropped; the view,
    the archive (still frozen), the closed positions and the record stay."""

    publication = load_connector_file(None)["config"].get("publication.name", settings.slot_name)
    admin = settings.as_admin()
    with (
        connect(admin.target_dsn.get_secret_value(), "the database", autocommit=False) as conn,
        mapped_errors("finalize"),
    ):
        record = objects.latest(conn, SOURCE_TABLE)
        if record is None or record.state != "cut_over":
            raise ConfigurationError(
                f"nothing to finalize: {SOURCE_TABLE} is "
                + ("not cut over" if record is None else record.state.replace("_", " "))
            )
        schema = catalog.schema_of(conn, settings.target_table)
        objects.drop_change_log(conn, schema, settings.target_table)
        conn.execute(q("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication)))
        objects.record_finalized(conn, record)
        conn.commit()
    return record
