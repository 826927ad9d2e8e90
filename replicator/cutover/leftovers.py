"""What a cutover leaves behind until it is finished, read from where it lives.

The switch commits first; the connector is deleted and its replication slot dropped after
(switch.py :func:`~replicator.cutover.switch.finish`), and the finalize drops the
publication.  A command interrupted between the two (Ctrl-C, a lost connection) leaves
them, and the slot retains WAL until it is dropped.  So the status commands (``stack
status``, ``connector status``, ``cutover --dry-run``, ``verify``) never take the cutover
record's word for it: they read ``pg_replication_slots``, ``pg_publication`` and Kafka
Connect's list of connectors here, say what is left and exit non-zero until
``replicator cutover``, run again, has removed it (:func:`remove`)."""

from __future__ import annotations

from collections.abc import Callable

from psycopg import sql

from replicator.clients.connect import ConnectClient, load_connector_file
from replicator.cutover import objects
from replicator.db.connect import connect, mapped_errors
from replicator.errors import ReplicatorError
from replicator.settings import Settings

AGAIN = "`replicator cutover` run again removes"


def publication_name(settings: Settings) -> str:
    """The connector's publication (the connector file's, else the slot's name)."""
    config = load_connector_file(settings.connector_file)["config"]
    return str(config.get("publication.name", settings.slot_name))


def found(settings: Settings, record: objects.Record) -> list[str]:
    """Read-only.  Each thing that exists and the state of ``record`` does not need, as one
    phrase (empty: nothing is left): the connector's slot, the connector (when a Connect
    URL is set; one Kafka Connect does not answer for is named as unknown), and after the
    finalize the publication (until then a rollback needs it)."""
    left: list[str] = []
    with (
        connect(settings.slot_dsn, "the source database") as conn,
        mapped_errors("read the replication slots"),
    ):
        slot = conn.execute(
            "SELECT active, pg_size_pretty(coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(),"
            " restart_lsn), 0)) FROM pg_replication_slots WHERE slot_name = %s",
            [settings.slot_name],
        ).fetchone()
        if slot is not None:
            use = "in use" if slot[0] else "not in use"
            left.append(
                f"replication slot {settings.slot_name} ({use}, retaining {slot[1]} of WAL)"
            )
        name = publication_name(settings)
        published = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [name])
        if record.state == "finalized" and published.fetchone() is not None:
            left.append(f"publication {name}")
    connector = _connector(settings)
    return left + ([connector] if connector else [])


def _connector(settings: Settings) -> str | None:
    if not settings.connect_url:  # nothing to ask: the cutover itself needs one to delete it
        return None
    name = load_connector_file(settings.connector_file)["name"]
    try:
        names = ConnectClient(settings.connect_url).names()
    except ReplicatorError as exc:
        return f"connector {name}: unknown, Kafka Connect did not answer ({exc})"
    return f"connector {name} (registered with Kafka Connect)" if name in names else None


def summary(left: list[str]) -> str:
    """Pure.  One sentence: what is left and what removes it."""
    return f"the cutover is not finished: still there: {'; '.join(left)}; {AGAIN} " + (
        "it" if len(left) == 1 else "them"
    )


def remove(settings: Settings, record: objects.Record, say: Callable[[str], None]) -> bool:
    """What ``cutover`` run again does after the switch: delete the connector, drop the
    slot, and after the finalize the publication.  True when nothing is left."""
    from replicator.cutover.switch import finish

    done = finish(settings, say)
    if record.state == "finalized":
        name = publication_name(settings)
        with (
            connect(settings.slot_dsn, "the source database", autocommit=True) as conn,
            mapped_errors("drop the publication"),
        ):
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
        say(f"publication {name} is gone")
    return done
