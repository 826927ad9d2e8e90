"""After a cutover the target table is the application's: nothing may apply an old change
event to it any more.  The stream itself is closed (its positions, checkpoint.py); the
tools that apply events outside the stream (``replay`` into the live table or a swap into
it, ``dlq redrive``) ask here first, and refuse until a rollback reopens the stream."""

from __future__ import annotations

from replicator.cutover import objects
from replicator.db.connect import connect, mapped_errors
from replicator.errors import ConfigurationError
from replicator.settings import Settings


def refuse_after_cutover(settings: Settings, table: str, what: str) -> None:
    """Raise :class:`ConfigurationError` when the stream into ``table`` was closed by a
    cutover (``what``: the refused action, for the message)."""
    with (
        connect(settings.target_dsn.get_secret_value(), "the target database") as conn,
        mapped_errors("read the cutover record"),
    ):
        cut_at = objects.cut_over_into(conn, table)
    if cut_at is not None:
        raise ConfigurationError(
            f"{what} refused: the stream into {table} was closed by the cutover of"
            f" {cut_at:%Y-%m-%d %H:%M:%S %Z}; {table} is the application's table now, and an"
            " old change event would write over its writes (`replicator rollback` reopens"
            " the stream)"
        )
