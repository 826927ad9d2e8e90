"""The decode stage for Avro in the Confluent wire format (byte 0, a 4-byte big-endian
schema id, Avro binary): the same :class:`~replicator.events.ChangeEvent` as JSON, with
the same reasons for what it refuses (:mod:`replicator.stream.source.decode`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import BytesIO
from typing import Any, NamedTuple

from fastavro import parse_schema, schemaless_reader

from replicator.errors import ConfigurationError, DecodeError, TransientError
from replicator.events import ChangeEvent, KafkaPosition
from replicator.mapping.reals import real_value
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


class _Writer(NamedTuple):
    schema_id: int
    parsed: Any
    scales: Scales | None
    floats: tuple[str, ...]  # float32 columns (REAL): read as their shortest text


def _row_columns(schema: Any) -> list[dict[str, Any]]:
    """The columns of the row records of a Debezium envelope's writer schema."""
    if schema.__class__ is not dict or schema.get("type") != "record":
        return []
    columns: list[dict[str, Any]] = []
    for field in schema.get("fields", ()):
        if field.get("name") not in ("before", "after"):
            continue
        for record in _avro_members(field.get("type")):
            # "null", or a reference to the record 'before' defined, is skipped
            if record.__class__ is dict and record.get("type") == "record":
                columns.extend(record.get("fields", ()))
    return columns


def _avro_floats(schema: Any) -> tuple[str, ...]:
    """Row columns of Avro type ``float``: fastavro gives a float32's exact binary value,
    the mapping reads the shortest text a JSON event would carry (:func:`real_value`)."""
    return tuple(
        sorted(
            {
                column["name"]
                for column in _row_columns(schema)
                for member in _avro_members(column.get("type"))
                if member == "float" or (member.__class__ is dict and member.get("type") == "float")
            }
        )
    )


def _avro_members(avro_type: Any) -> list[Any]:
    return avro_type if avro_type.__class__ is list else [avro_type]


def _avro_scales(schema: Any) -> Scales | None:
    """Time scales of the row columns of a Debezium envelope's writer schema."""
    scales: Scales = {}
    for column in _row_columns(schema):
        for member in _avro_members(column.get("type")):
            if member.__class__ is not dict:
                continue
            scale = TIME_SCALE.get(str(member.get("connect.name")), 1)
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
        """Decode one message; ``None`` for a tombstone.  A message it refuses names its
        row in ``DecodeError.row_key`` when its key can be read (a value whose writer
        schema the registry no longer has, under a key whose schema it still has)."""
        if value is None:
            return None
        try:
            return self._decode(key, value, position)
        except DecodeError as exc:
            exc.row_key = row_key(lambda k: self._read(k, "key")[1], key)
            raise

    def _decode(self, key: bytes | None, value: bytes, position: KafkaPosition) -> ChangeEvent:
        writer, payload = self._read(value, "value")
        op = op_of(payload)
        if key is None:
            no_key(op)
            key_id = None
        else:
            try:
                key_record = self._read(key, "key")[1]
            except DecodeError as exc:
                if exc.reason != "invalid_avro":
                    raise
                raise DecodeError(str(exc), reason="invalid_key") from None
            key_id = key_of(key_record, op, key)
        for column in writer.floats:
            for image in (payload.get("before"), payload.get("after")):
                if image.__class__ is dict and image.get(column).__class__ is float:
                    image[column] = real_value(image[column])
        return envelope_event(payload, op, key_id, position, writer.scales)

    def _read(self, data: bytes, what: str) -> tuple[_Writer, Any]:
        if len(data) < 5 or data[0] != 0:
            raise DecodeError(
                f"the {what} is not in the Confluent Avro wire format (magic byte 0, then a "
                f"4-byte schema id); it starts with {show(bytes(data[:8]))}",
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
            floats = _avro_floats(schema)
        except Exception as exc:  # any malformation of a registry document
            raise DecodeError(
                f"writer schema id {schema_id} is not a usable Avro schema: {exc}",
                reason="invalid_schema",
            ) from exc
        writer = self._writers[schema_id] = _Writer(schema_id, parsed, scales, floats)
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
        if registered.schema_str is None:
            raise LookupError(f"schema id {schema_id} has no schema text")
        schema: dict[str, Any] = json.loads(registered.schema_str)
        return schema

    return schema_for_id
