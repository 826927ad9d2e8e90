"""One classification of PostgreSQL errors (db/connect.py): retry, dead-letter or stop."""

from __future__ import annotations

import psycopg
import pytest

from replicator.db.connect import classify
from replicator.errors import ConfigurationError, TargetUnavailable


@pytest.mark.parametrize(
    "message",
    [
        'connection failed: FATAL:  role "nobody" does not exist',
        'connection failed: FATAL:  password authentication failed for user "app"',
        'connection failed: FATAL:  database "nowhere" does not exist',
        'connection failed: FATAL:  no pg_hba.conf entry for host "10.0.0.1"',
    ],
)
def test_a_connection_the_server_refuses_for_who_is_asking_is_a_configuration_error(
    message: str,
) -> None:
    """At connect time libpq gives no SQLSTATE: a refused role or database must not be
    retried for ever like an outage (run exits 2, as the other commands do)."""
    error = classify(psycopg.OperationalError(message), "connect to the target database")
    assert isinstance(error, ConfigurationError)
    assert "check the DSN" in str(error)


def test_a_server_that_does_not_answer_is_an_outage() -> None:
    message = 'connection failed: connection to server at "127.0.0.1", port 1 failed: refused'
    error = classify(psycopg.OperationalError(message), "connect to the target database")
    assert isinstance(error, TargetUnavailable)
