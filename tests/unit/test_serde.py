"""The decode stage: recorded-style fixtures, error reasons, properties, Avro round-trips."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.errors import DecodeError, TransientError
from replicator.events import UNAVAILABLE, ChangeEvent, KafkaPosition, Op
from replicator.mapping.rows import map_to_tuple
from replicator.stream.source import decode as serde
from replicator.stream.source.decode import decode_json
from replicator.stream.source.decode_avro import AvroDecoder
from tests.unit.helpers import map_row

FIXTURES = Path(__file__).resolve().parent / "fixtures"
AVRO = Path(__file__).resolve().parents[2] / "schemas" / "avro"
POSITION = KafkaPosition("legacy.public.workflow_processes", 0, 7)


def load(name: str) -> tuple[bytes | None, bytes | None, KafkaPosition]:
    """A fixture in kcat -J shape: the key and payload exactly as the bytes on the wire."""
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    key = None if doc["key"] is None else doc["key"].encode()
    value = None if doc["payload"] is None else doc["payload"].encode()
    return key, value, KafkaPosition(doc["topic"], doc["partition"], doc["offset"])


def decode_fixture(name: str) -> ChangeEvent | None:
    return decode_json(*load(name))


def must(event: ChangeEvent | None) -> ChangeEvent:
    assert event is not None
    return event


def payload_of(name: str) -> dict[str, Any]:
    return json.loads(load(name)[1] or b"null")


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# --------------------------------------------------------------------------- fixtures

EXPECTED = [
    # (fixture, op, key, snapshot, lsn, source_ts_ms, has before, has after)
    ("c_insert", Op.CREATE, "wp-1", None, 24023928, 1795523676000, False, True),
    ("c_insert_nulls", Op.CREATE, "wp-2", None, 24024100, 1795523676001, False, True),
    ("u_update", Op.UPDATE, "wp-1", None, 24024300, 1795523676002, False, True),
    ("u_update_unavailable", Op.UPDATE, "wp-1", None, 24024500, 1795523676003, False, True),
    ("d_delete", Op.DELETE, "wp-1", None, 24024700, 1795523676004, True, False),
    ("r_snapshot_first", Op.READ, "wp-0", "first", 24000000, 1795523671000, False, True),
    ("r_snapshot_last", Op.READ, "wp-1", "last", 24000000, 1795523671000, False, True),
    ("r_snapshot_incremental", Op.READ, "wp-1", "incremental", None, 1795523676010, False, True),
    ("t_truncate", Op.TRUNCATE, None, None, 24024900, 1795523676005, False, False),
    ("m_message", Op.MESSAGE, None, None, 24025100, 1795523676006, False, False),
]


@pytest.mark.parametrize(
    ("name", "op", "key", "snapshot", "lsn", "ts", "has_before", "has_after"), EXPECTED
)
def test_fixture_decodes(
    name: str,
    op: Op,
    key: str | None,
    snapshot: str | None,
    lsn: int | None,
    ts: int,
    has_before: bool,
    has_after: bool,
) -> None:
    _, _, position = load(name)
    event = must(decode_fixture(name))
    assert (event.op, event.key, event.snapshot, event.lsn, event.source_ts_ms) == (
        op,
        key,
        snapshot,
        lsn,
        ts,
    )
    assert (event.before is not None, event.after is not None) == (has_before, has_after)
    assert event.position == position
    if has_after:
        assert event.after == payload_of(name)["after"]  # no schema: values as they are


@pytest.mark.parametrize(
    "name", ["c_insert", "u_update", "d_delete", "r_snapshot_first", "t_truncate"]
)
def test_schemas_on_and_off_decode_to_the_same_event(name: str) -> None:
    plain = must(decode_fixture(name))
    wrapped = must(decode_fixture(f"{name}.schemas"))
    assert wrapped == plain._replace(position=wrapped.position)


@pytest.mark.parametrize("name", ["d_tombstone", "d_tombstone.schemas"])
def test_tombstones_decode_to_none(name: str) -> None:
    key, value, position = load(name)
    assert key is not None and value is None
    assert decode_json(key, value, position) is None


def test_delete_with_placeholder_before_values_keeps_only_the_key_meaningful() -> None:
    event = must(decode_fixture("d_delete"))
    assert event.key == "wp-1" and event.after is None
    assert event.before is not None and event.before["id"] == "wp-1"
    assert event.before["created_at"] == 0 and event.before["workflow_name"] == ""


def test_unavailable_value_survives_decoding_and_is_left_untouched_by_mapping() -> None:
    event = must(decode_fixture("u_update_unavailable"))
    assert event.after is not None and event.after["result"] == UNAVAILABLE
    result = map_row(event.after)
    assert result.unavailable == {"result_data"}
    assert result.run.status == "archived"


@pytest.mark.parametrize(
    "name",
    ["c_insert", "c_insert_nulls", "u_update", "r_snapshot_first", "r_snapshot_last"],
)
def test_decoded_rows_map(name: str) -> None:
    event = must(decode_fixture(name))
    assert event.after is not None
    map_row(event.after)


def test_null_row_keeps_nulls_end_to_end() -> None:
    run = map_row(must(decode_fixture("c_insert_nulls")).after or {}).run
    assert (run.max_turns, run.created_at, run.updated_at, run.status) == (
        None,
        None,
        None,
        "pending",
    )


def test_pre_1970_snapshot_row() -> None:
    run = map_row(must(decode_fixture("r_snapshot_first")).after or {}).run
    assert run.created_at == datetime(1930, 11, 18, 0, 28, 29, 876543)
    assert run.error_details == '{"error": "boom: disk full"}'


def test_millisecond_timestamps_are_normalised_with_schemas() -> None:
    event = must(decode_fixture("c_insert_millis.schemas"))
    assert event.after is not None
    assert event.after["created_at"] == 1795523674893000
    assert event.after["updated_at"] == 1795523675000000
    assert event.after["started_at"] == 1795523674999000
    assert event.after["completed_at"] is None


@pytest.mark.parametrize(
    ("semantic", "raw", "micros"),
    [
        ("io.debezium.time.MicroTimestamp", 1718000000123456, 1718000000123456),
        ("io.debezium.time.Timestamp", 1718000000123, 1718000000123000),
        ("org.apache.kafka.connect.data.Timestamp", -1, -1000),
        ("io.debezium.time.NanoTimestamp", 1718000000123456789, 1718000000123456),
        ("io.debezium.time.NanoTimestamp", -1500, -2),  # floor: the microsecond it lies in
    ],
)
def test_semantic_time_types_become_microseconds(semantic: str, raw: int, micros: int) -> None:
    key, value, position = load("c_insert.schemas")
    doc = json.loads(value or b"")
    for part in doc["schema"]["fields"][:2]:
        for column in part["fields"]:
            if column["field"] == "created_at":
                column["name"] = semantic
    doc["payload"]["after"]["created_at"] = raw
    event = must(decode_json(key, encode(doc), position))
    assert event.after is not None and event.after["created_at"] == micros


def test_stdlib_json_fallback_decodes_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = [decode_fixture(name) for name, *_ in EXPECTED]
    monkeypatch.setattr(serde, "_loads", json.loads)
    assert [decode_fixture(name) for name, *_ in EXPECTED] == fast
    with pytest.raises(DecodeError) as caught:
        decode_json(b'{"id": "x"}', b"[" * 100_000, POSITION)
    assert caught.value.reason == "invalid_json"


# --------------------------------------------------------------------------- errors


def _event_doc(**changes: Any) -> dict[str, Any]:
    doc = payload_of("c_insert")
    doc.update(changes)
    return doc


KEY = b'{"id":"wp-1"}'
BAD_MESSAGES = [
    # (key, value, reason)
    (KEY, b"not json at all", "invalid_json"),
    (KEY, b"", "invalid_json"),
    (KEY, b"\xff\xfe\x00", "invalid_json"),
    (KEY, b'{"op": "c"', "invalid_json"),
    (KEY, b"[]", "not_an_envelope"),
    (KEY, b'"c"', "not_an_envelope"),
    (KEY, b"null", "not_an_envelope"),
    (KEY, b'{"id": "wp-1", "workflow_name": "x"}', "not_an_envelope"),
    (KEY, encode(_event_doc(source=None)), "not_an_envelope"),
    (KEY, encode(_event_doc(source="pg")), "not_an_envelope"),
    (KEY, encode(_event_doc(before=[1])), "not_an_envelope"),
    (KEY, encode({"schema": None, "payload": None}), "not_an_envelope"),
    (KEY, encode(_event_doc(op="z")), "unknown_op"),
    (KEY, encode(_event_doc(op=1)), "unknown_op"),
    (KEY, encode(_event_doc(op="C")), "unknown_op"),
    (KEY, encode(_event_doc(op=["c"])), "unknown_op"),
    (KEY, b'{"op": "c"}', "missing_row_image"),
    (KEY, encode(_event_doc(after=None)), "missing_row_image"),
    (KEY, encode(_event_doc(op="u", after=None)), "missing_row_image"),
    (KEY, encode(_event_doc(op="d", after=None, before=None)), "missing_row_image"),
    (b'{"id":"wp-2"}', encode(_event_doc()), "key_mismatch"),
    (KEY, encode(_event_doc(op="d", before={"id": "wp-3"}, after=None)), "key_mismatch"),
    (None, encode(_event_doc()), "invalid_key"),
    (b"\xff\xfe", encode(_event_doc()), "invalid_key"),
    (b"{}", encode(_event_doc()), "invalid_key"),
    (b'{"id": 1}', encode(_event_doc()), "invalid_key"),
    (b'"wp-1"', encode(_event_doc()), "invalid_key"),
    (b'{"schema": {}, "payload": null}', encode(_event_doc()), "invalid_key"),
    (KEY, encode(_event_doc(source={"lsn": "0/16B3748"})), "invalid_source"),
    (KEY, encode(_event_doc(source={"lsn": 1, "ts_ms": 1.5})), "invalid_source"),
    (KEY, encode(_event_doc(source={"lsn": True})), "invalid_source"),
    (KEY, encode(_event_doc(source={"snapshot": 3})), "invalid_source"),
    (KEY, encode({"schema": 5, "payload": _event_doc()}), "invalid_schema"),
    (KEY, encode({"schema": {"fields": [1]}, "payload": _event_doc()}), "invalid_schema"),
    (
        KEY,
        encode({"schema": {"fields": [{"field": "after", "fields": 2}]}, "payload": _event_doc()}),
        "invalid_schema",
    ),
]


@pytest.mark.parametrize(("key", "value", "reason"), BAD_MESSAGES)
def test_bad_messages_raise_decode_error_with_reason(
    key: bytes | None, value: bytes, reason: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_json(key, value, POSITION)
    assert caught.value.reason == reason
    assert len(str(caught.value)) < 400  # a human can read it in a DLQ header


def test_snapshot_values() -> None:
    for raw, expected in [
        ("false", None),
        (None, None),
        ("true", "true"),
        ("first_in_data_collection", "first_in_data_collection"),
        ("last_in_data_collection", "last_in_data_collection"),
        (True, "true"),
        (False, None),
    ]:
        source = dict(payload_of("c_insert")["source"], snapshot=raw)
        assert must(decode_json(KEY, encode(_event_doc(source=source)), POSITION)).snapshot == (
            expected
        )
    source = payload_of("c_insert")["source"]
    del source["snapshot"]
    assert must(decode_json(KEY, encode(_event_doc(source=source)), POSITION)).snapshot is None


def test_truncate_and_message_accept_a_missing_or_foreign_key() -> None:
    _, value, _ = load("t_truncate")
    assert must(decode_json(None, value, POSITION)).key is None
    assert must(decode_json(b'{"prefix":"x"}', value, POSITION)).key is None
    assert must(decode_json(KEY, value, POSITION)).key == "wp-1"


# --------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ENVELOPE_KEYS = [
    "op",
    "before",
    "after",
    "source",
    "id",
    "lsn",
    "snapshot",
    "ts_ms",
    "schema",
    "payload",
    "fields",
    "field",
    "name",
]
envelope_like = st.recursive(
    st.sampled_from(["c", "u", "d", "r", "t", "m", "wp-1", "false", "first", None, 0, -1, 1.5])
    | json_values,
    lambda inner: (
        st.dictionaries(st.sampled_from(ENVELOPE_KEYS), inner, max_size=6)
        | st.lists(inner, max_size=3)
    ),
    max_leaves=25,
)
keys = st.none() | st.binary(max_size=40) | st.just(KEY) | envelope_like.map(encode)


def _only_decode_errors(decode: Callable[[], Any]) -> None:
    try:
        result = decode()
    except DecodeError as exc:
        assert exc.reason and str(exc)
    else:
        assert result is None or isinstance(result, ChangeEvent)


@given(keys, st.none() | st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(key: bytes | None, value: bytes | None) -> None:
    _only_decode_errors(lambda: decode_json(key, value, POSITION))


@given(keys, json_values)
def test_arbitrary_json_raises_only_decode_error(key: bytes | None, doc: Any) -> None:
    _only_decode_errors(lambda: decode_json(key, encode(doc), POSITION))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(keys, envelope_like, st.booleans())
def test_envelope_like_json_raises_only_decode_error(
    key: bytes | None, doc: Any, wrap: bool
) -> None:
    if wrap:
        doc = {"schema": doc, "payload": doc}
    _only_decode_errors(lambda: decode_json(key, encode(doc), POSITION))


@given(st.sampled_from(["c_insert", "u_update", "d_delete", "r_snapshot_first"]), json_values)
def test_one_corrupted_field_raises_only_decode_error(name: str, junk: Any) -> None:
    key, value, _ = load(f"{name}.schemas")
    doc = json.loads(value or b"")
    for path in (["payload", "source"], ["payload", "after"], ["schema", "fields"], ["payload"]):
        corrupt = copy.deepcopy(doc)
        parent = corrupt
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = junk
        _only_decode_errors(lambda c=corrupt: decode_json(key, encode(c), POSITION))


# --------------------------------------------------------------------------- Avro

KEY_SCHEMA = json.loads((AVRO / "workflow_processes_key.avsc").read_text())
ENVELOPE_SCHEMA = json.loads((AVRO / "workflow_processes_envelope.avsc").read_text())
KEY_ID, VALUE_ID = 41, 42


def frame(schema_id: int, schema: dict[str, Any], record: Any) -> bytes:
    out = io.BytesIO()
    out.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(out, fastavro.parse_schema(copy.deepcopy(schema)), record)
    return out.getvalue()


class Registry:
    def __init__(self, schemas: dict[int, dict[str, Any]]) -> None:
        self.schemas = schemas
        self.calls: list[int] = []

    def __call__(self, schema_id: int) -> dict[str, Any]:
        self.calls.append(schema_id)
        return copy.deepcopy(self.schemas[schema_id])  # KeyError = unknown id


def registry() -> Registry:
    return Registry({KEY_ID: KEY_SCHEMA, VALUE_ID: ENVELOPE_SCHEMA})


def avro_message(name: str) -> tuple[bytes | None, bytes | None, KafkaPosition]:
    key, value, position = load(name)
    avro_key = None if key is None else frame(KEY_ID, KEY_SCHEMA, json.loads(key))
    avro_value = None if value is None else frame(VALUE_ID, ENVELOPE_SCHEMA, json.loads(value))
    return avro_key, avro_value, position


AVRO_FIXTURES = [name for name, *_ in EXPECTED if name != "m_message"]


@pytest.mark.parametrize("name", AVRO_FIXTURES)
def test_avro_round_trip_matches_json(name: str) -> None:
    from_json = must(decode_fixture(name))
    from_avro = must(AvroDecoder(registry()).decode(*avro_message(name)))
    assert (from_avro.op, from_avro.key, from_avro.lsn, from_avro.snapshot) == (
        from_json.op,
        from_json.key,
        from_json.lsn,
        from_json.snapshot,
    )
    assert (from_avro.source_ts_ms, from_avro.position) == (
        from_json.source_ts_ms,
        from_json.position,
    )
    for avro_image, json_image in (
        (from_avro.before, from_json.before),
        (from_avro.after, from_json.after),
    ):
        assert (avro_image is None) == (json_image is None)
        if avro_image is not None and json_image is not None:
            # REAL travels as an Avro float: 1.1 comes back as 1.100000023841858 ...
            assert {k: v for k, v in avro_image.items() if k != "total_cost"} == {
                k: v for k, v in json_image.items() if k != "total_cost"
            }
            # ... and maps to the same row.
            if from_json.op is not Op.DELETE:
                assert map_to_tuple(avro_image) == map_to_tuple(json_image)


def test_avro_float32_total_cost_maps_like_json() -> None:
    event = must(AvroDecoder(registry()).decode(*avro_message("c_insert")))
    # Avro carries the float32's exact value (1.100000023841858): read as its printed text
    assert event.after is not None and event.after["total_cost"] == 1.1
    assert str(map_row(event.after).run.total_cost) == "1.1000"


def test_avro_tombstone_and_keyless_truncate() -> None:
    decoder = AvroDecoder(registry())
    key, _, position = avro_message("d_tombstone")
    assert decoder.decode(key, None, position) is None
    _, value, position = avro_message("t_truncate")
    assert must(decoder.decode(None, value, position)).op is Op.TRUNCATE


def test_avro_writer_schemas_are_looked_up_once() -> None:
    lookup = registry()
    decoder = AvroDecoder(lookup)
    for name in AVRO_FIXTURES * 3:
        decoder.decode(*avro_message(name))
    assert sorted(lookup.calls) == [KEY_ID, VALUE_ID]


def test_avro_connect_timestamp_logical_type_becomes_microseconds() -> None:
    schema = copy.deepcopy(ENVELOPE_SCHEMA)
    value_record = schema["fields"][0]["type"][1]
    for column in value_record["fields"]:
        if column["name"] == "created_at":
            column["type"] = [
                "null",
                {
                    "type": "long",
                    "logicalType": "timestamp-millis",
                    "connect.version": 1,
                    "connect.name": "org.apache.kafka.connect.data.Timestamp",
                },
            ]
            column["default"] = None
        if column["name"] == "updated_at":
            column["type"] = [
                "null",
                {"type": "long", "connect.name": "io.debezium.time.Timestamp"},
            ]
    doc = payload_of("c_insert")
    doc["after"]["created_at"] = datetime(1960, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    doc["after"]["updated_at"] = 1718000000123
    decoder = AvroDecoder(Registry({KEY_ID: KEY_SCHEMA, 77: schema}))
    event = must(
        decoder.decode(frame(KEY_ID, KEY_SCHEMA, {"id": "wp-1"}), frame(77, schema, doc), POSITION)
    )
    assert event.after is not None
    assert event.after["created_at"] == (
        datetime(1960, 5, 6, 7, 8, 9, 123000) - datetime(1970, 1, 1)
    ) // (datetime(1970, 1, 1, 0, 0, 0, 1) - datetime(1970, 1, 1))
    assert event.after["updated_at"] == 1718000000123000


def test_avro_errors_have_reasons() -> None:
    decoder = AvroDecoder(registry())
    key, value, _ = avro_message("c_insert")
    assert key is not None and value is not None
    cases = [
        (key, b'{"op": "c"}', "invalid_avro"),  # JSON on an Avro topic
        (key, b"\x00\x00\x00", "invalid_avro"),
        (key, value[:-3], "invalid_avro"),  # truncated
        (key, value + b"\x00", "invalid_avro"),  # trailing bytes
        (key, b"\x00" + (999).to_bytes(4, "big") + value[5:], "unknown_schema_id"),
        (b"\x01" + key[1:], value, "invalid_key"),
        (key[:5] + b"\x02\xff\xfe", value, "invalid_key"),  # key is not UTF-8
        (frame(KEY_ID, KEY_SCHEMA, {"id": "wp-9"}), value, "key_mismatch"),
        (None, value, "invalid_key"),
        (frame(VALUE_ID, ENVELOPE_SCHEMA, payload_of("c_insert")), value, "invalid_key"),
    ]
    for k, v, reason in cases:
        with pytest.raises(DecodeError) as caught:
            decoder.decode(k, v, POSITION)
        assert caught.value.reason == reason, (k, v, caught.value)


def test_a_refused_message_names_the_row_its_key_names() -> None:
    """An event whose value cannot be decoded (a writer schema the registry no longer
    has) still names its row, so the stream can leave a hold for it (intake.py)."""
    key, value, _ = avro_message("r_snapshot_first")
    assert key is not None and value is not None
    forgotten = b"\x00" + (999).to_bytes(4, "big") + value[5:]
    with pytest.raises(DecodeError) as caught:
        AvroDecoder(registry()).decode(key, forgotten, POSITION)
    assert (caught.value.reason, caught.value.row_key) == ("unknown_schema_id", "wp-0")
    with pytest.raises(DecodeError) as caught:  # neither schema known: no row named
        AvroDecoder(Registry({})).decode(key, forgotten, POSITION)
    assert caught.value.row_key is None
    for bad_key, named in ((KEY, "wp-1"), (b'{"payload": {"id": "wp-2"}, "schema": {}}', "wp-2")):
        with pytest.raises(DecodeError) as caught:
            decode_json(bad_key, b"{not json", POSITION)
        assert caught.value.row_key == named
    for unnamed in (None, b"[1]", b'{"id": 5}', b"\xff"):
        with pytest.raises(DecodeError) as caught:
            decode_json(unnamed, b"{not json", POSITION)
        assert caught.value.row_key is None


def test_avro_unusable_writer_schema() -> None:
    decoder = AvroDecoder(Registry({1: {"type": "nonsense"}}))
    with pytest.raises(DecodeError) as caught:
        decoder.decode(None, b"\x00\x00\x00\x00\x01\x00", POSITION)
    assert caught.value.reason == "invalid_schema"


def test_avro_non_envelope_record() -> None:
    decoder = AvroDecoder(Registry({5: {"type": "string"}}))
    with pytest.raises(DecodeError) as caught:
        decoder.decode(None, frame(5, {"type": "string"}, "hello"), POSITION)
    assert caught.value.reason == "not_an_envelope"


def test_avro_registry_outage_is_not_bad_input() -> None:
    def down(schema_id: int) -> dict[str, Any]:
        raise TransientError("registry unreachable")

    _, value, _ = avro_message("c_insert")
    with pytest.raises(TransientError):
        AvroDecoder(down).decode(KEY, value, POSITION)


@given(st.binary(max_size=300), st.sampled_from([KEY_ID, VALUE_ID, 999]))
def test_arbitrary_avro_bodies_raise_only_decode_error(body: bytes, schema_id: int) -> None:
    decoder = AvroDecoder(registry())
    key, _, _ = avro_message("c_insert")
    framed = b"\x00" + schema_id.to_bytes(4, "big") + body
    _only_decode_errors(lambda: decoder.decode(key, framed, POSITION))
    _only_decode_errors(lambda: decoder.decode(framed, framed, POSITION))
    _only_decode_errors(lambda: decoder.decode(body, body, POSITION))
