"""The one event type every stage after decoding sees.

A :class:`ChangeEvent` is independent of the wire format (Debezium JSON with or
without schemas, Avro).  It carries its Kafka position (topic, partition, offset)
and its source position (the PostgreSQL LSN), so that the sink can store the
consumed position with the rows it produced and refuse to let an older event
overwrite a newer row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Op(StrEnum):
    """Debezium's ``op`` codes."""

    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # snapshot read: initial, blocking or incremental
    TRUNCATE = "t"
    MESSAGE = "m"  # logical decoding message


#: Debezium's default stand-in for an unchanged TOASTed column (REPLICA IDENTITY DEFAULT).
UNAVAILABLE = "__debezium_unavailable_value"


@dataclass(frozen=True, slots=True)
class KafkaPosition:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One row change of ``workflow_processes``.

    ``key`` is the legacy primary key (``id``).  ``before``/``after`` are the row
    images as plain values (timestamps still as Debezium integers); columns whose
    value Debezium marked unavailable hold :data:`UNAVAILABLE`.  ``lsn`` is the
    source LSN as an integer, ``None`` for events that carry none (incremental
    snapshot reads); ``snapshot`` is Debezium's ``source.snapshot`` string or
    ``None`` when streaming.
    """

    op: Op
    key: str | None
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    lsn: int | None
    source_ts_ms: int | None
    snapshot: str | None
    position: KafkaPosition
