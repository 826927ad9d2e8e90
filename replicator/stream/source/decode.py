"""The decode stage: Kafka message bytes -> :class:`~replicator.events.ChangeEvent`.

Two wire formats of Debezium's PostgreSQL connector are understood:

* JSON (``JsonConverter``), with ``schemas.enable`` false (the bare payload) or true
  (``{"schema": ..., "payload": ...}``), for key and value independently:
  :func:`decode_json`;
* Avro in the Confluent wire format (byte 0, 4-byte big-endian schema id, Avro
  binary): :class:`~replicator.stream.source.decode_avro.AvroDecoder`.

Both give the same event: row images as plain values with every TIMESTAMP column in
integer microseconds since the epoch (what ``io.debezium.time.MicroTimestamp``
carries).  Where a schema says a column is in milliseconds or nanoseconds it is
converted; JSON without schemas is taken to be in microseconds.

A tombstone (value ``None``) decodes to ``None``.  Every input that is not a change
event of ``workflow_processes`` raises :class:`~replicator.errors.DecodeError` and
nothing else; its ``reason`` is one of:

==================  =================================================================
invalid_json        the value is not JSON (or not UTF-8)
invalid_avro        not the Confluent wire format, or not Avro of the writer schema
unknown_schema_id   the schema registry does not know the writer schema id
invalid_schema      the embedded Connect schema / the writer schema is malformed
not_an_envelope     valid JSON/Avro, but not a Debezium envelope (no ``op``, ...)
unknown_op          ``op`` is none of c, u, d, r, t, m
missing_row_image   no ``after`` for c/u/r, no ``before`` for d
invalid_key         the key is missing or is not ``{"id": <text>}``
key_mismatch        the key's id differs from the row image's id
invalid_source      ``source.lsn``/``ts_ms``/``snapshot`` has the wrong type
==================  =================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from replicator.errors import DecodeError
from replicator.events import ChangeEvent, KafkaPosition
from replicator.settings import Settings
from replicator.stream.source.decode_avro import AvroDecoder, registry_lookup
from replicator.stream.source.envelope import (
    TIME_SCALE,
    Scales,
    envelope_event,
    key_of,
    no_key,
    op_of,
    row_key,
    show,
)

try:  # about 3x faster than the stdlib on a Debezium event; the stdlib is the fallback
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - exercised by tests through monkeypatching
    from json import loads as _loads  # type: ignore[assignment]  # the same call, str or bytes

__all__ = ["decode_json", "decoder_for"]

# What a parser raises for bad bytes: JSONDecodeError and UnicodeDecodeError are
# ValueErrors; the stdlib recurses on deeply nested input.
_PARSE_ERRORS = (ValueError, TypeError, RecursionError)


def _json_scales(schema: Any) -> Scales | None:
    """Time scales of the row columns named in a Connect envelope schema."""
    fields = schema.get("fields") if schema.__class__ is dict else None
    if fields.__class__ is not list:
        raise DecodeError(
            f"the embedded schema is not a Connect struct schema: {show(schema)}",
            reason="invalid_schema",
        )
    scales: Scales = {}
    for field in fields:
        if field.__class__ is not dict:
            raise DecodeError(
                f"the embedded schema has a malformed field {show(field)}", reason="invalid_schema"
            )
        if field.get("field") not in ("before", "after"):
            continue
        columns = field.get("fields")
        if columns.__class__ is not list:
            raise DecodeError(
                f"the embedded schema of '{field.get('field')}' is not a struct",
                reason="invalid_schema",
            )
        for column in columns:
            if column.__class__ is not dict:
                raise DecodeError(
                    f"the embedded schema has a malformed column {show(column)}",
                    reason="invalid_schema",
                )
            name, column_name = column.get("name"), column.get("field")
            if name.__class__ is str and column_name.__class__ is str:
                scale = TIME_SCALE.get(name, 1)
                if scale != 1:
                    scales[column_name] = scale
    return scales or None


def _parse(data: bytes, what: str, reason: str) -> Any:
    try:
        return _loads(data)
    except _PARSE_ERRORS as exc:
        raise DecodeError(
            f"the {what} is not valid JSON ({exc}); it starts with {show(data[:40])}",
            reason=reason,
        ) from None


def _unwrap(doc: Any) -> tuple[Any, Any]:
    """(payload, schema) of a JsonConverter document with or without schemas."""
    if doc.__class__ is dict and "payload" in doc and "schema" in doc and len(doc) == 2:
        return doc["payload"], doc["schema"]
    return doc, None


def decode_json(
    key: bytes | None, value: bytes | None, position: KafkaPosition
) -> ChangeEvent | None:
    """Decode one JsonConverter message; ``None`` for a tombstone.  A message it refuses
    names its row in ``DecodeError.row_key`` when its key can be read."""
    if value is None:
        return None
    try:
        payload, schema = _unwrap(_parse(value, "value", "invalid_json"))
        op = op_of(payload)
        if key is None:
            no_key(op)
            key_id = None
        else:
            key_id = key_of(_unwrap(_parse(key, "key", "invalid_key"))[0], op, key)
        scales = _json_scales(schema) if schema is not None else None
        return envelope_event(payload, op, key_id, position, scales)
    except DecodeError as exc:
        exc.row_key = row_key(_json_key, key)
        raise


def _json_key(key: bytes) -> Any:
    return _unwrap(_loads(key))[0]


#: A decoder: (key, value, where the message was) -> the event, or None for a tombstone.
Decoder = Callable[[bytes | None, bytes | None, KafkaPosition], ChangeEvent | None]


def decoder_for(settings: Settings) -> Decoder:
    """The decoder of ``settings.value_format``."""
    if settings.value_format == "avro":
        assert settings.schema_registry_url is not None  # settings validate it
        return AvroDecoder(registry_lookup(settings.schema_registry_url)).decode
    return decode_json
