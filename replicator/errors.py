"""Every error the replicator raises, in one hierarchy.

::

    ReplicatorError
     +-- ConfigurationError      bad settings, CLI arguments or files: clear message, exit 2
     +-- Refused                 the state forbids the action (after a cutover, a finalize): exit 3
     +-- TransientError          the world is briefly unavailable: retry with backoff
     |    +-- TargetUnavailable  the target database cannot be reached / went away
     |    +-- BrokerUnavailable  Kafka cannot be reached
     |    +-- PositionsFenced    another writer moved the stored positions: re-read them
     |    +-- PositionOutOfRange the log does not hold a partition's position: re-check it
     +-- TerminalError           retrying will not help
     |    +-- EventError         one event cannot be used: it goes to the dead-letter topic
     |    |    +-- DecodeError   the bytes are not a Debezium change event we understand
     |    |    +-- MappingError  the legacy row cannot become a valid ``workflow_runs`` row
     |    +-- PositionGap       events were removed before they were applied: repair, then accept
     |    +-- StackError         a part of the local stack did not come up (names part and log)
     |    +-- ConnectError       Kafka Connect's REST API refused a call
     +-- CutOver                 the table was cut over: nothing is left to replicate (exit 0)

Errors of the libraries below us (psycopg, librdkafka, urllib) are mapped at the
boundary where they are caught, with ``raise ... from exc``.
"""

from __future__ import annotations


class ReplicatorError(Exception):
    """Base of every error raised on purpose by this package."""


class ConfigurationError(ReplicatorError):
    """A setting, argument or file is invalid; the message says which and how to fix it."""


class Refused(ReplicatorError):
    """The action is valid but the state forbids it (a cutover closed the stream, a finalize
    ended the rollback window): nothing was changed; the message says why and what, if
    anything, makes it possible again."""


class TransientError(ReplicatorError):
    """A dependency is temporarily unavailable; the operation may be retried."""


class TargetUnavailable(TransientError):
    """The target PostgreSQL database could not be reached or dropped the connection."""


class BrokerUnavailable(TransientError):
    """The Kafka broker could not be reached."""


class PositionsFenced(TransientError):
    """The stored position of a partition is no longer the one this consumer loaded or
    stored last (a table swap handed other positions over, or another consumer owns the
    partition now).  The batch is rolled back; re-position from the stored positions."""


class PositionOutOfRange(TransientError):
    """The broker does not hold the offset a partition was positioned at (the topic was
    re-created, or retention removed it).  Re-position from the stored positions, which
    are checked against the topic as it is now (stream/origin.py)."""


class GenerationChanged(PositionOutOfRange):
    """A snapshot generation was recorded after the batch's changes were stamped: the
    batch rolls back and the partitions are re-read with the generations reloaded."""


class TerminalError(ReplicatorError):
    """Retrying the same operation will fail the same way."""


class EventError(TerminalError):
    """One event cannot be applied.  ``reason`` is a short machine-readable code."""

    reason: str = "invalid_event"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DecodeError(EventError):
    """The message is not a Debezium change event this replicator understands.
    ``row_key``: the row its key names, when the key could be read (the decoder sets it)."""

    reason = "decode_error"
    row_key: str | None = None


class MappingError(EventError):
    """The legacy row cannot be mapped to a valid ``workflow_runs`` row."""

    reason = "mapping_error"


#: Every reason an event is dead-lettered for (``dlq.reason``, the label of
#: ``replicator_events_dead_lettered_total``), with what it means: each series exists from
#: the start at 0, so an alert on its increase sees the first dead letter.  The docs'
#: reference lists this mapping as it is.
DEAD_LETTER_REASONS = {
    "decode_error": "the message could not be decoded, for a reason no other name gives",
    "invalid_avro": "an Avro message whose bytes do not match its registered schema",
    "invalid_json": "a key or value that is not JSON",
    "invalid_key": 'a key that is not {"id": <text>}',
    "invalid_schema": "an embedded or registered schema the decoder cannot read",
    "invalid_source": "a `source` block whose LSN, timestamps or snapshot flag are malformed",
    "key_mismatch": "a key whose id differs from the row image's id",
    "mapping_error": "a value the target column cannot hold (NaN, out of range, bad text)",
    "missing_row_image": "a create, update or read event without its `after` image",
    "not_an_envelope": "a value that is not a Debezium change event envelope",
    "partial_update_missing_row": "an update without its unchanged TOASTed values, for a"
    " row the target does not have: it cannot be completed",
    "schema_mismatch": "a column the mapping reads is missing from the row (dropped or"
    " renamed in the source): never mapped as NULL",
    "snapshot_timestamp": "a snapshot read's timestamp in the ten days before 1582-10-15"
    " that JDBC's Julian calendar cannot tell apart",
    "target_rejected": "a row the target database refused (a constraint, a value it"
    " cannot store), found by halving the batch",
    "unknown_op": "an `op` that is none of c, u, d, r, t, m",
    "unknown_schema_id": "an Avro message whose schema id the registry does not have",
}


class PositionGap(TerminalError):
    """A stored position lies below the oldest offset the broker still holds: the events
    between were removed (retention) before they were applied and cannot be re-read."""


class StackError(TerminalError):
    """A part of the local stack did not come up or go down."""


class ConnectError(TerminalError):
    """Kafka Connect's REST API answered with an error."""


class ConnectBusy(ConnectError):
    """Kafka Connect did not answer in time, refused the connection, or is rebalancing
    (HTTP 409, or a 5xx): a worker just started answers like this until it has joined
    its group, so the call may be tried again."""


class CutOver(ReplicatorError):
    """``replicator cutover`` closed the stream: the application writes ``workflow_runs``
    now, and a consumer that finds its positions closed ends cleanly."""
