"""After a cutover the target table is the application's: nothing may apply an old change
event to it any more.  The stream itself is closed (its positions, checkpoint.py); the
tools that apply events outside the stream (``replay`` into the live table or a swap into
it, ``dlq redrive``) ask here first, and refuse until a rollback reopens the stream.

The commands that set up or report on the stream (``stack up``, ``stack status``,
``connector``, ``verify``, ``assess``, ``run``) read the same record (:func:`closed_by`)
and say what is true after a cutover: the connector and its slot are not needed (the
status commands check that they are gone: leftovers.py), ``run`` stays up idle with
nothing to replicate (``/readyz`` and ``replicator_cut_over`` say so), and only a
rollback (before the finalize) brings the stream back."""

from __future__ import annotations

from replicator.cutover import objects
from replicator.db.connect import connect, mapped_errors
from replicator.errors import Refused
from replicator.mapping.columns import SOURCE_TABLE
from replicator.settings import Settings


def refuse_after_cutover(settings: Settings, table: str, what: str) -> None:
    """Raise :class:`Refused` when the stream into ``table`` was closed by a cutover
    (``what``: the refused action, for the message)."""
    with (
        connect(settings.target_dsn.get_secret_value(), "the target database") as conn,
        mapped_errors("read the cutover record"),
    ):
        cut_at = objects.cut_over_into(conn, table)
    if cut_at is not None:
        raise Refused(
            f"{what}: the stream into {table} was closed by the cutover of"
            f" {cut_at:%Y-%m-%d %H:%M:%S %Z}; {table} is the application's table now, and an"
            " old change event would write over its writes (`replicator rollback` reopens"
            " the stream)"
        )


def closed_by(dsn: str) -> objects.Record | None:
    """The cutover that closed the stream of ``workflow_processes`` (None: never cut over,
    or rolled back since), read on ``dsn`` (the target database)."""
    with connect(dsn, "the target database") as conn, mapped_errors("read the cutover record"):
        record = objects.latest(conn, SOURCE_TABLE)
    return None if record is None or record.state == "rolled_back" else record


def describe(record: objects.Record) -> str:
    """Pure. What is true after ``record``'s cutover, and what an operator may do."""
    when = f"{record.cut_at:%Y-%m-%d %H:%M:%S%z}"
    if record.state == "finalized":
        return (
            f"{SOURCE_TABLE} was cut over at {when} and finalized: the migration is complete;"
            " the stream is closed for good (no connector, slot or publication is needed);"
            " `replicator run` stays up idle with nothing to replicate (retire its"
            " deployment, scrape job and alerts)"
        )
    return (
        f"{SOURCE_TABLE} was cut over at {when}: it is a view of {record.target_table}, the"
        " stream is closed, its connector and slot are not needed (the cutover removes"
        " them), and `replicator run` stays up idle with nothing to replicate;"
        " `replicator rollback` reopens the stream (an idle `replicator run` resumes by"
        " itself), `replicator cutover --finalize` ends the rollback window"
    )
