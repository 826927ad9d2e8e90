"""Taking ``ACCESS EXCLUSIVE`` locks on tables an application is using, without making
every writer queue behind us: the one lock-with-retry of the product (the cutover, the
rollback and the replay's swap use it).

A ``LOCK`` that waits makes every later statement on the table wait behind it, so each
try is bounded by a short ``lock_timeout`` and given up (rolled back), then tried again
after a short pause; a long transaction in the application makes us wait, never the
application for long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from replicator.errors import TerminalError

log = logging.getLogger("replicator.locks")
q = sql.SQL


def holder_session(statement_timeout_s: float) -> dict[str, Any]:
    """Connection options of a session that takes such locks: writers queue behind it, so
    it must not outlive its client.  A client that stops talking mid-transaction (a paused
    VM, a crashed process) is cut off by ``idle_in_transaction_session_timeout``, one that
    became unreachable by TCP keepalives, a statement that never ends by
    ``statement_timeout``: each releases the locks within seconds."""
    return {
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "options": (
            "-c idle_in_transaction_session_timeout=10s"
            f" -c statement_timeout={int(statement_timeout_s * 1000)}"
        ),
    }


#: The modes a caller may ask for: each makes every writer of the tables wait.
MODES = ("ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE ROW EXCLUSIVE")
T = TypeVar("T")


def take(conn: psycopg.Connection[Any], tables: sql.Composable, mode: str) -> None:
    """``LOCK tables IN <mode> MODE``, once: only inside a step of :func:`bounded`."""
    if mode not in MODES:
        raise ValueError(f"lock mode {mode!r}")
    conn.execute(q("LOCK TABLE {} IN {} MODE").format(tables, q(mode)))


def bounded(
    conn: psycopg.Connection[Any],
    what: str,
    timeout_s: float,
    attempts: int,
    step: Callable[[], T],
) -> tuple[T, int]:
    """``step`` in a new transaction of ``conn`` whose every lock wait is bounded by
    ``timeout_s``; its result and the tries it took.  A lock not granted in time (or a
    deadlock, which PostgreSQL resolves against us when we waited first) rolls back
    everything the try took, and the step is tried again after a pause, so nobody waits
    behind us for longer than one try.  Raises :class:`TerminalError` after ``attempts``
    (nothing was changed: every try rolled back).  A step should take its strongest lock
    on a table first: a lock taken weaker and raised later lets an application in between,
    and then each waits for the other."""
    for attempt in range(1, attempts + 1):
        try:
            conn.execute(
                q("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(timeout_s * 1000)}ms"))
            )
            return step(), attempt
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
            conn.rollback()
            log.warning(
                "lock not granted in time; trying again", extra={"what": what, "attempt": attempt}
            )
            time.sleep(min(0.2 * attempt, 2.0))
    raise TerminalError(
        f"could not lock {what} in {attempts} tries of {timeout_s:g} s:"
        " a long transaction holds it; nothing was changed, try again"
    )


def lock(
    conn: psycopg.Connection[Any],
    tables: sql.Composable,
    timeout_s: float,
    attempts: int,
    mode: str = "ACCESS EXCLUSIVE",
) -> int:
    """``LOCK tables IN <mode> MODE`` in a new transaction of ``conn``, each try bounded
    by ``timeout_s`` (:func:`bounded`); the tries it took."""

    def step() -> None:
        take(conn, tables, mode)
        conn.execute("SET LOCAL lock_timeout = '30s'")

    return bounded(conn, tables.as_string(None), timeout_s, attempts, step)[1]
