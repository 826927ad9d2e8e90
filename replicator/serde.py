"""The decode stage: Kafka message bytes -> :class:`~replicator.events.ChangeEvent`.

Two wire formats of Debezium's PostgreSQL connector are understood:

* JSON (``JsonConverter``), with ``schemas.enable`` false (the bare payload) or true
  (``{"schema": ..., "payload": ...}``), for key and value independently:
  :func:`decode_json`;
* Avro in the Confluent wire format (byte 0, 4-byte big-endian schema id, Avro
  binary): :class:`AvroDecoder`.

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

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any, NamedTuple

from fastavro import parse_schema, schemaless_reader

from replicator.errors import ConfigurationError, DecodeError, TransientError
from replicator.events import ChangeEvent, KafkaPosition, Op

try:  # about 3x faster than the stdlib on a Debezium event; the stdlib is the fallback
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - exercised by tests through monkeypatching
    from json import loads as _loads

__all__ = ["AvroDecoder", "decode_json", "registry_lookup"]

# What a parser raises for bad bytes: JSONDecodeError and UnicodeDecodeError are
# ValueErrors; the stdlib recurses on deeply nested input.
_PARSE_ERRORS = (ValueError, TypeError, RecursionError)

_OPS: dict[str, Op] = {op.value: op for op in Op}
# The row image that must exist, and carry the key's id, for each op.
_KEYED_IMAGE: dict[Op, str] = {
    Op.CREATE: "after",
    Op.UPDATE: "after",
    Op.READ: "after",
    Op.DELETE: "before",
}
# Scale to integer microseconds by semantic type name: > 1 multiplies, < 0 floor-divides;
# 0 marks an Avro timestamp logical type, which fastavro returns as a datetime.
_TIME_SCALE: dict[str, int] = {
    "io.debezium.time.MicroTimestamp": 1,
    "io.debezium.time.Timestamp": 1000,
    "org.apache.kafka.connect.data.Timestamp": 1000,
    "io.debezium.time.NanoTimestamp": -1000,
}
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Scales = dict[str, int]


def _show(data: Any, limit: int = 60) -> str:
    text = repr(data)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- envelope


def _op_of(payload: Any) -> Op:
    if payload.__class__ is not dict:
        raise DecodeError(
            f"expected a Debezium envelope (an object with op/before/after/source), "
            f"got {type(payload).__name__} {_show(payload)}",
            reason="not_an_envelope",
        )
    code = payload.get("op")
    if code is None:
        raise DecodeError(
            f"the object has no 'op' (keys: {_show(sorted(map(str, payload)))}); "
            "is the topic carrying Debezium change events, without an unwrap SMT?",
            reason="not_an_envelope",
        )
    op = _OPS.get(code) if code.__class__ is str else None
    if op is None:
        raise DecodeError(
            f"unknown op {_show(code)}; expected one of c, u, d, r, t, m", reason="unknown_op"
        )
    return op


def _optional_int(source: dict[str, Any], name: str) -> int | None:
    value = source.get(name)
    if value is None or (value.__class__ is int):
        return value
    raise DecodeError(
        f"source.{name} must be an integer or null, got {_show(value)}", reason="invalid_source"
    )


def _rescale(image: dict[str, Any], scales: Scales) -> None:
    for column, scale in scales.items():
        value = image.get(column)
        if value.__class__ is int:
            if scale > 1:
                image[column] = value * scale
            elif scale < 0:
                image[column] = value // -scale
        elif isinstance(value, datetime):  # Avro timestamp-* logical types
            epoch = _EPOCH if value.tzinfo is None else _EPOCH_UTC
            image[column] = (value - epoch) // _MICROSECOND


def _event(
    payload: dict[str, Any],
    op: Op,
    key: str | None,
    position: KafkaPosition,
    scales: Scales | None,
) -> ChangeEvent:
    before = payload.get("before")
    after = payload.get("after")
    for name, image in (("before", before), ("after", after)):
        if image is not None and image.__class__ is not dict:
            raise DecodeError(
                f"'{name}' must be an object or null, got {type(image).__name__}",
                reason="not_an_envelope",
            )
    needed = _KEYED_IMAGE.get(op)
    if needed is not None:
        image = after if needed == "after" else before
        if image is None:
            raise DecodeError(
                f"op {op.value!r} without the '{needed}' row image (key {_show(key)})",
                reason="missing_row_image",
            )
        if image.get("id") != key:
            raise DecodeError(
                f"the key's id {_show(key)} differs from {needed}.id {_show(image.get('id'))}",
                reason="key_mismatch",
            )
    if scales:
        if before is not None:
            _rescale(before, scales)
        if after is not None:
            _rescale(after, scales)

    source = payload.get("source")
    if source.__class__ is not dict:
        raise DecodeError(
            f"'source' must be an object, got {_show(source)}", reason="not_an_envelope"
        )
    snapshot = source.get("snapshot")
    if snapshot is None or snapshot == "false" or snapshot is False:
        snapshot = None
    elif snapshot is True:  # Debezium before 1.6 sent a boolean
        snapshot = "true"
    elif snapshot.__class__ is not str:
        raise DecodeError(
            f"source.snapshot must be a string, got {_show(snapshot)}", reason="invalid_source"
        )
    return ChangeEvent(
        op=op,
        key=key,
        before=before,
        after=after,
        lsn=_optional_int(source, "lsn"),
        source_ts_ms=_optional_int(source, "ts_ms"),
        snapshot=snapshot,
        position=position,
    )


def _key_id(payload: Any, op: Op, raw: Any) -> str | None:
    key = payload.get("id") if payload.__class__ is dict else None
    if key.__class__ is str:
        return key
    if op is Op.TRUNCATE or op is Op.MESSAGE:  # their keys, if any, carry no row id
        return None
    raise DecodeError(f'the key must be {{"id": <text>}}, got {_show(raw)}', reason="invalid_key")


def _no_key(op: Op) -> None:
    if op is not Op.TRUNCATE and op is not Op.MESSAGE:
        raise DecodeError(
            f"op {op.value!r} arrived without a key; Debezium keys every row change by id",
            reason="invalid_key",
        )


# --------------------------------------------------------------------------- JSON


def _json_scales(schema: Any) -> Scales | None:
    """Time scales of the row columns named in a Connect envelope schema."""
    fields = schema.get("fields") if schema.__class__ is dict else None
    if fields.__class__ is not list:
        raise DecodeError(
            f"the embedded schema is not a Connect struct schema: {_show(schema)}",
            reason="invalid_schema",
        )
    scales: Scales = {}
    for field in fields:
        if field.__class__ is not dict:
            raise DecodeError(
                f"the embedded schema has a malformed field {_show(field)}", reason="invalid_schema"
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
                    f"the embedded schema has a malformed column {_show(column)}",
                    reason="invalid_schema",
                )
            name, column_name = column.get("name"), column.get("field")
            if name.__class__ is str and column_name.__class__ is str:
                scale = _TIME_SCALE.get(name, 1)
                if scale != 1:
                    scales[column_name] = scale
    return scales or None


def _parse(data: bytes, what: str, reason: str) -> Any:
    try:
        return _loads(data)
    except _PARSE_ERRORS as exc:
        raise DecodeError(
            f"the {what} is not valid JSON ({exc}); it starts with {_show(data[:40])}",
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
    """Decode one JsonConverter message; ``None`` for a tombstone."""
    if value is None:
        return None
    payload, schema = _unwrap(_parse(value, "value", "invalid_json"))
    op = _op_of(payload)
    if key is None:
        _no_key(op)
        key_id = None
    else:
        key_id = _key_id(_unwrap(_parse(key, "key", "invalid_key"))[0], op, key)
    scales = _json_scales(schema) if schema is not None else None
    return _event(payload, op, key_id, position, scales)


# --------------------------------------------------------------------------- Avro


class _Writer(NamedTuple):
    schema_id: int
    parsed: Any
    scales: Scales | None


def _avro_members(avro_type: Any) -> list[Any]:
    return avro_type if avro_type.__class__ is list else [avro_type]


def _avro_scales(schema: Any) -> Scales | None:
    """Time scales of the row columns of a Debezium envelope's writer schema."""
    if schema.__class__ is not dict or schema.get("type") != "record":
        return None
    scales: Scales = {}
    for field in schema.get("fields", ()):
        if field.get("name") not in ("before", "after"):
            continue
        for record in _avro_members(field.get("type")):
            if record.__class__ is not dict or record.get("type") != "record":
                continue  # "null", or a reference to the record defined in 'before'
            for column in record.get("fields", ()):
                for member in _avro_members(column.get("type")):
                    if member.__class__ is not dict:
                        continue
                    scale = _TIME_SCALE.get(member.get("connect.name"), 1)
                    logical = member.get("logicalType", "")
                    if logical.endswith(("timestamp-millis", "timestamp-micros")):
                        scale = 0  # fastavro returns a datetime: _rescale converts it
                    if scale != 1:
                        scales[column["name"]] = scale
    return scales or None


class AvroDecoder:
    """Decode Confluent-framed Avro messages with writer schemas looked up by id.

    ``schema_for_id`` returns the writer schema (parsed JSON) of a registry id and
    raises ``LookupError`` for an unknown id (the event is then bad input) or a
    :class:`~replicator.errors.TransientError` when the registry cannot be reached
    (the event is not bad input: the caller retries).  Parsed schemas are cached.
    """

    def __init__(self, schema_for_id: Callable[[int], dict[str, Any]]) -> None:
        self._schema_for_id = schema_for_id
        self._writers: dict[int, _Writer] = {}

    def decode(
        self, key: bytes | None, value: bytes | None, position: KafkaPosition
    ) -> ChangeEvent | None:
        """Decode one message; ``None`` for a tombstone."""
        if value is None:
            return None
        writer, payload = self._read(value, "value")
        op = _op_of(payload)
        if key is None:
            _no_key(op)
            key_id = None
        else:
            try:
                key_record = self._read(key, "key")[1]
            except DecodeError as exc:
                if exc.reason != "invalid_avro":
                    raise
                raise DecodeError(str(exc), reason="invalid_key") from None
            key_id = _key_id(key_record, op, key)
        return _event(payload, op, key_id, position, writer.scales)

    def _read(self, data: bytes, what: str) -> tuple[_Writer, Any]:
        if len(data) < 5 or data[0] != 0:
            raise DecodeError(
                f"the {what} is not in the Confluent Avro wire format (magic byte 0, then a "
                f"4-byte schema id); it starts with {_show(bytes(data[:8]))}",
                reason="invalid_avro",
            )
        writer = self._writer(int.from_bytes(data[1:5], "big"))
        stream = BytesIO(data)
        stream.seek(5)
        try:
            record = schemaless_reader(stream, writer.parsed, None)
        except Exception as exc:  # fastavro fails in many ways on corrupt bytes
            raise DecodeError(
                f"the {what} is not valid Avro for writer schema id {writer.schema_id}: "
                f"{type(exc).__name__}: {exc}",
                reason="invalid_avro",
            ) from None
        if stream.tell() != len(data):
            raise DecodeError(
                f"the {what} has {len(data) - stream.tell()} bytes after the Avro record of "
                f"writer schema id {writer.schema_id}",
                reason="invalid_avro",
            )
        return writer, record

    def _writer(self, schema_id: int) -> _Writer:
        writer = self._writers.get(schema_id)
        if writer is not None:
            return writer
        try:
            schema = self._schema_for_id(schema_id)
        except LookupError as exc:
            raise DecodeError(
                f"writer schema id {schema_id} is unknown to the schema registry ({exc})",
                reason="unknown_schema_id",
            ) from exc
        try:
            parsed = parse_schema(schema)
            scales = _avro_scales(schema)
        except Exception as exc:  # any malformation of a registry document
            raise DecodeError(
                f"writer schema id {schema_id} is not a usable Avro schema: {exc}",
                reason="invalid_schema",
            ) from exc
        writer = self._writers[schema_id] = _Writer(schema_id, parsed, scales)
        return writer


def registry_lookup(url: str) -> Callable[[int], dict[str, Any]]:
    """A ``schema_for_id`` for :class:`AvroDecoder` backed by a Confluent Schema Registry.

    An unknown id raises ``LookupError``; an unreachable or failing registry raises
    :class:`~replicator.errors.TransientError`; refused credentials raise
    :class:`~replicator.errors.ConfigurationError`.
    """
    # Imported here: only Avro deployments need the registry client and its HTTP stack.
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    client = SchemaRegistryClient({"url": url})

    def schema_for_id(schema_id: int) -> dict[str, Any]:
        try:
            registered = client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise LookupError(f"{url} has no schema with id {schema_id}") from exc
            if exc.http_status_code in (401, 403):
                raise ConfigurationError(f"schema registry {url} refused access: {exc}") from exc
            raise TransientError(f"schema registry {url} failed: {exc}") from exc
        except Exception as exc:  # connection errors of the client's HTTP stack
            raise TransientError(f"schema registry {url} is unreachable: {exc}") from exc
        if (registered.schema_type or "AVRO") != "AVRO":
            raise LookupError(f"schema id {schema_id} is {registered.schema_type}, not AVRO")
        return json.loads(registered.schema_str)

    return schema_for_id
