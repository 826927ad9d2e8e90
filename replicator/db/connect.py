"""Every PostgreSQL connection the package opens, and the one classification of errors.

Errors of psycopg are mapped here, at the boundary, by SQLSTATE:

* no server answer, connection loss, deadlock, resources, operator intervention, lock
  or idle timeouts, a read-only server (a failover in progress) -> ``TargetUnavailable``
  (transient: retry, the next call reconnects);
* data the server refuses (classes 22, 23, 54) -> ``EventError`` with reason
  ``target_rejected`` (one event's problem: dead-letter it);
* a missing table, column, privilege, database or a failed login ->
  ``ConfigurationError`` (an operator must act);
* anything else -> ``TerminalError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from replicator.errors import (
    ConfigurationError,
    EventError,
    ReplicatorError,
    TargetUnavailable,
    TerminalError,
)

# connection, rollback (deadlock), resources, operator intervention, system error, lock
# timeouts, idle-session timeout, read-only (a failover in progress)
TRANSIENT_STATES = ("08", "40", "53", "57", "58", "55P03", "55006", "25P03", "25006")
DATA_STATES = ("22", "23", "54")
CONFIG_STATES = ("42", "3D", "3F", "28")
APPLICATION_NAME = "replicator"
#: What libpq says when the server refused the connection for who or what was asked for
#: (the error carries no SQLSTATE at connect time): retrying cannot help.
REFUSED_CONNECTIONS = (
    "password authentication failed",
    "authentication failed for user",
    "no pg_hba.conf entry",
    "does not exist",  # role "x" / database "x" does not exist
    "permission denied for database",
)


def classify(exc: psycopg.Error, what: str) -> ReplicatorError:
    """Pure. The package's error for ``exc``, raised while trying to ``what``."""
    state = exc.sqlstate or ""
    message = f"cannot {what}: {type(exc).__name__}: {first_line(exc)}"
    if isinstance(exc, psycopg.InterfaceError) or state.startswith(TRANSIENT_STATES):
        return TargetUnavailable(message)
    if not state and isinstance(exc, psycopg.OperationalError):
        if any(refused in message for refused in REFUSED_CONNECTIONS):
            return ConfigurationError(f"{message} (check the DSN's user, password and database)")
        return TargetUnavailable(message)  # no server answer: connect or socket failure
    if state.startswith(DATA_STATES) or (not state and isinstance(exc, psycopg.DataError)):
        return EventError(message, reason="target_rejected")
    if state in ("42P01", "42703"):  # undefined table / column
        return ConfigurationError(f"{message} (create it with `replicator schema apply`)")
    if state == "42501":
        return ConfigurationError(
            f"{message} (the role lacks a privilege: run this as the tables' owner, through"
            " REPLICATOR_ADMIN_SOURCE_DSN / REPLICATOR_ADMIN_TARGET_DSN, or grant it)"
        )
    if state.startswith(CONFIG_STATES):  # privileges, authentication, missing database
        return ConfigurationError(message)
    return TerminalError(message)


def first_line(exc: BaseException) -> str:
    """The server's message without libpq's CONTEXT/DETAIL lines."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Raise the package's error (``classify``) for any psycopg error in the block."""
    try:
        yield
    except psycopg.Error as exc:
        raise classify(exc, what) from exc


def with_application_name(dsn: str) -> str:
    """``dsn`` with ``application_name=replicator`` unless it names one (a bad DSN raises
    :class:`ConfigurationError`)."""
    try:
        options = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ConfigurationError(f"invalid connection string: {first_line(exc)}") from exc
    if "application_name" in options:
        return dsn
    return psycopg.conninfo.make_conninfo(dsn, application_name=APPLICATION_NAME)


def connect(
    dsn: str,
    what: str,
    *,
    autocommit: bool = True,
    connect_timeout: float = 10.0,
    **kwargs: Any,
) -> psycopg.Connection[Any]:
    """Open a connection (``what``: the purpose, for the error message); errors classified.

    The session prints floats as their shortest round-trip decimal (``extra_float_digits``
    1, PostgreSQL's default, which a database or role may have changed): the SQL mapping
    of ``total_cost`` reads that text (:mod:`replicator.mapping.sql`).
    """
    with mapped_errors(f"connect to {what}"):
        conn = psycopg.connect(
            with_application_name(dsn),
            autocommit=autocommit,
            connect_timeout=max(2, math.ceil(connect_timeout)),  # libpq: whole seconds >= 2
            **kwargs,
        )
        try:
            conn.execute("SET extra_float_digits = 1")
            if not autocommit:
                conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn
