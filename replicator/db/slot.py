"""The replication slot of the connector, dropped when the connector that used it is gone
(an abandoned slot holds WAL forever)."""

from __future__ import annotations

import time
from collections.abc import Callable

from replicator.db.connect import connect, mapped_errors


def drop_slot(dsn: str, slot: str, say: Callable[[str], None], wait_s: float = 30.0) -> bool:
    """Drop ``slot`` once no process uses it (its connector's task may still be
    stopping); True when it is gone, False when it stayed in use for ``wait_s``."""
    with (
        connect(dsn, "the source database", autocommit=True) as conn,
        mapped_errors("drop the replication slot"),
    ):
        deadline = time.monotonic() + wait_s
        while True:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", [slot]
            ).fetchone()
            if row is None:
                say(f"replication slot {slot} is gone")
                return True
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
                say(f"replication slot {slot} dropped")
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
