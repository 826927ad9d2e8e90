"""The Debezium envelope, whatever its wire format: ``op``, the row images, the key's id
and ``source`` (LSN, commit time, snapshot) -> :class:`~replicator.events.ChangeEvent`.
Shared by the JSON (:mod:`replicator.stream.source.decode`) and Avro
(:mod:`replicator.stream.source.decode_avro`) decoders; the reasons it refuses an event are
listed in :mod:`replicator.stream.source.decode`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from replicator.errors import DecodeError
from replicator.events import ChangeEvent, KafkaPosition, Op

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
TIME_SCALE: dict[str, int] = {
    "io.debezium.time.MicroTimestamp": 1,
    "io.debezium.time.Timestamp": 1000,
    "org.apache.kafka.connect.data.Timestamp": 1000,
    "io.debezium.time.NanoTimestamp": -1000,
}
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Scales = dict[str, int]


def show(data: Any, limit: int = 60) -> str:
    text = repr(data)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- envelope


def op_of(payload: Any) -> Op:
    if payload.__class__ is not dict:
        raise DecodeError(
            f"expected a Debezium envelope (an object with op/before/after/source), "
            f"got {type(payload).__name__} {show(payload)}",
            reason="not_an_envelope",
        )
    code = payload.get("op")
    if code is None:
        raise DecodeError(
            f"the object has no 'op' (keys: {show(sorted(map(str, payload)))}); "
            "is the topic carrying Debezium change events, without an unwrap SMT?",
            reason="not_an_envelope",
        )
    op = _OPS.get(code) if code.__class__ is str else None
    if op is None:
        raise DecodeError(
            f"unknown op {show(code)}; expected one of c, u, d, r, t, m", reason="unknown_op"
        )
    return op


def _optional_int(source: dict[str, Any], name: str) -> int | None:
    value = source.get(name)
    if value is None or (value.__class__ is int):
        return value
    raise DecodeError(
        f"source.{name} must be an integer or null, got {show(value)}", reason="invalid_source"
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


def envelope_event(
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
                f"op {op.value!r} without the '{needed}' row image (key {show(key)})",
                reason="missing_row_image",
            )
        if image.get("id") != key:
            raise DecodeError(
                f"the key's id {show(key)} differs from {needed}.id {show(image.get('id'))}",
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
            f"'source' must be an object, got {show(source)}", reason="not_an_envelope"
        )
    snapshot = source.get("snapshot")
    if snapshot is None or snapshot == "false" or snapshot is False:
        snapshot = None
    elif snapshot is True:  # Debezium before 1.6 sent a boolean
        snapshot = "true"
    elif snapshot.__class__ is not str:
        raise DecodeError(
            f"source.snapshot must be a string, got {show(snapshot)}", reason="invalid_source"
        )
    lsn, ts_ms = source.get("lsn"), source.get("ts_ms")
    if (lsn is not None and lsn.__class__ is not int) or (
        ts_ms is not None and ts_ms.__class__ is not int
    ):
        lsn, ts_ms = _optional_int(source, "lsn"), _optional_int(source, "ts_ms")
    # positional: a keyword call costs twice as much, once per event
    return ChangeEvent(op, key, before, after, lsn, ts_ms, snapshot, position)


def key_of(payload: Any, op: Op, raw: Any) -> str | None:
    key = payload.get("id") if payload.__class__ is dict else None
    if key.__class__ is str:
        return key
    if op is Op.TRUNCATE or op is Op.MESSAGE:  # their keys, if any, carry no row id
        return None
    raise DecodeError(f'the key must be {{"id": <text>}}, got {show(raw)}', reason="invalid_key")


def row_key(read: Callable[[bytes], Any], key: bytes | None) -> str | None:
    """The id a message's key names (``{"id": <text>}``, read by ``read``), or None when
    it names none or cannot be read."""
    if key is None:
        return None
    try:
        payload = read(key)
    except Exception:  # any failure to read the key: it names no row
        return None
    found = payload.get("id") if payload.__class__ is dict else None
    return found if found.__class__ is str else None


def no_key(op: Op) -> None:
    if op is not Op.TRUNCATE and op is not Op.MESSAGE:
        raise DecodeError(
            f"op {op.value!r} arrived without a key; Debezium keys every row change by id",
            reason="invalid_key",
        )


# --------------------------------------------------------------------------- JSON
