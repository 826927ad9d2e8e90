"""The transform stage, table-driven from the migration plan and with properties."""

from __future__ import annotations

import io
import json
import re
import struct
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.errors import MappingError
from replicator.events import UNAVAILABLE
from replicator.mapping.columns import (
    COST_LIMIT,
    INT32_MAX,
    INT32_MIN,
    JSON_COLUMNS,
    SOURCE_COLUMNS,
    SOURCE_TO_TARGET,
    TARGET_COLUMNS,
    TARGET_TYPES,
)
from replicator.mapping.reals import real_value
from replicator.mapping.rows import map_to_tuple
from tests.unit.helpers import map_row

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def assert_valid_target_row(values: tuple[Any, ...]) -> None:
    """Each value as its workflow_runs column can hold it, checked independently of the
    mapping's own converters."""
    assert len(values) == len(TARGET_COLUMNS)
    for name, value in zip(TARGET_COLUMNS, values, strict=True):
        kind = TARGET_TYPES[name]
        if value is None:
            assert name not in ("run_id", "workflow_type", "description", "status"), name
        elif kind == "text":
            assert isinstance(value, str) and "\x00" not in value, name
        elif kind == "int4":
            assert type(value) is int and INT32_MIN <= value <= INT32_MAX, name
        elif kind == "timestamp":
            assert isinstance(value, datetime) and value.tzinfo is None, name
        elif kind == "numeric":
            assert isinstance(value, Decimal) and value.is_finite(), name
            assert abs(value) < COST_LIMIT and value.as_tuple().exponent == -4, name
        else:
            assert name in JSON_COLUMNS and isinstance(value, str), name
            json.loads(value)


EPOCH = datetime(1970, 1, 1)
US = timedelta(microseconds=1)
MIN_US = (datetime.min - EPOCH) // US
MAX_US = (datetime.max - EPOCH) // US


def legacy_row(**changes: Any) -> dict[str, Any]:
    """A full legacy row as Debezium's JSON payload gives it."""
    row: dict[str, Any] = {
        "id": "wp-1",
        "workflow_name": "code-review",
        "message": "Review PR #42",
        "max_turns": 12,
        "session_name": "sess-7",
        "git_branch": "feature/login",
        "repository_url": "https://git.example.com/acme/app.git",
        "created_at": 1795523674893171,
        "updated_at": 1795523675000001,
        "status": "running",
        "result": "ok",
        "error_message": "none",
        "execution_time": 81234,
        "total_cost": 1.100000023841858,
        "started_at": 1795523674999999,
        "completed_at": 1795523680123456,
    }
    row.update(changes)
    return row


def mapped(row: dict[str, Any]) -> dict[str, Any]:
    values, _ = map_to_tuple(row)
    return dict(zip(TARGET_COLUMNS, values, strict=True))


def ddl_columns(path: Path) -> list[str]:
    body = path.read_text().split("(", 1)[1]
    names = []
    for line in body.splitlines():
        match = re.match(r"\s+([a-z_]+)\s+(TEXT|INTEGER|TIMESTAMP|JSON|DECIMAL|REAL)\b", line)
        if match:
            names.append(match.group(1))
    return names


# --------------------------------------------------------------------------- shape


def test_column_lists_follow_the_ddl() -> None:
    assert list(SOURCE_COLUMNS) == ddl_columns(SCHEMAS / "workflow_processes.sql")
    assert list(TARGET_COLUMNS) == ddl_columns(SCHEMAS / "workflow_runs.sql")
    assert len(SOURCE_COLUMNS) == 16 and len(TARGET_COLUMNS) == 22
    assert list(SOURCE_TO_TARGET) == list(SOURCE_COLUMNS)
    assert set(SOURCE_TO_TARGET.values()) <= set(TARGET_COLUMNS)


# --------------------------------------------------------------------------- the plan's table

PLAN_TABLE = [
    # (current field, value, new field, expected value)
    ("id", "wp-77", "run_id", "wp-77"),
    ("workflow_name", "deploy", "workflow_type", "deploy"),
    ("message", "Ship it", "description", "Ship it"),
    ("max_turns", 7, "max_turns", 7),
    ("session_name", "sess-9", "session_id", "sess-9"),
    ("git_branch", "main", "git_branch", "main"),
    ("repository_url", "https://x/y.git", "repository_url", "https://x/y.git"),
    ("created_at", 1718000000123456, "created_at", datetime(2024, 6, 10, 6, 13, 20, 123456)),
    ("updated_at", 1718000001000000, "updated_at", datetime(2024, 6, 10, 6, 13, 21)),
    ("status", "completed", "status", "completed"),
    ("result", "all good", "result_data", '{"result": "all good"}'),
    ("error_message", "boom", "error_details", '{"error": "boom"}'),
    ("execution_time", 1500, "execution_time_ms", 1500),
    ("total_cost", 0.25, "total_cost", Decimal("0.2500")),
    ("started_at", 0, "started_at", datetime(1970, 1, 1)),
    ("completed_at", -1, "completed_at", datetime(1969, 12, 31, 23, 59, 59, 999999)),
]


def test_plan_table_covers_every_source_column() -> None:
    assert [(src, dst) for src, _, dst, _ in PLAN_TABLE] == list(SOURCE_TO_TARGET.items())


@pytest.mark.parametrize(("source", "value", "target", "expected"), PLAN_TABLE)
def test_plan_mapping_table(source: str, value: Any, target: str, expected: Any) -> None:
    run = map_row(legacy_row(**{source: value})).run
    assert getattr(run, target) == expected
    assert type(getattr(run, target)) is type(expected)


@pytest.mark.parametrize(
    ("target", "default"),
    [
        ("user_id", None),
        ("priority", "normal"),
        ("tags", "[]"),
        ("metadata", "{}"),
        ("progress_data", "{}"),
        ("resource_usage", "{}"),
    ],
)
def test_new_columns_get_the_plans_defaults(target: str, default: Any) -> None:
    assert mapped(legacy_row())[target] == default


def test_null_status_becomes_pending() -> None:
    assert map_row(legacy_row(status=None)).run.status == "pending"


def test_null_result_and_error_become_empty_objects() -> None:
    run = map_row(legacy_row(result=None, error_message=None)).run
    assert (run.result_data, run.error_details) == ("{}", "{}")


def test_row_with_every_nullable_column_null_keeps_the_nulls() -> None:
    nullable = [c for c in SOURCE_COLUMNS if c not in ("id", "workflow_name", "message")]
    values = mapped(legacy_row(**dict.fromkeys(nullable)))
    assert values == {
        "run_id": "wp-1",
        "workflow_type": "code-review",
        "description": "Review PR #42",
        "user_id": None,
        "status": "pending",
        "priority": "normal",
        "max_turns": None,  # NOT the column default 30: a NULL stays NULL
        "session_id": None,
        "git_branch": None,
        "repository_url": None,
        "created_at": None,  # NOT CURRENT_TIMESTAMP
        "updated_at": None,
        "started_at": None,
        "completed_at": None,
        "result_data": "{}",
        "error_details": "{}",
        "execution_time_ms": None,
        "total_cost": None,
        "tags": "[]",
        "metadata": "{}",
        "progress_data": "{}",
        "resource_usage": "{}",
    }


def test_unknown_extra_columns_are_ignored() -> None:
    assert mapped(legacy_row(owner="someone", __deleted="false")) == mapped(legacy_row())


def test_json_text_is_exactly_json_dumps_without_ascii_escaping() -> None:
    text = 'naïve "quote" \\ back\nslash \t ✓ 𝄞 \x00 \u2028'
    run = map_row(legacy_row(result=text, error_message=text)).run
    assert run.result_data == json.dumps({"result": text}, ensure_ascii=False)
    assert run.error_details == json.dumps({"error": text}, ensure_ascii=False)
    assert json.loads(run.result_data) == {"result": text}


def test_result_holding_json_text_is_wrapped_as_text_not_parsed() -> None:
    run = map_row(legacy_row(result='{"a": 1}')).run
    assert json.loads(run.result_data) == {"result": '{"a": 1}'}


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("micros", "expected"),
    [
        (0, datetime(1970, 1, 1)),
        (1, datetime(1970, 1, 1, 0, 0, 0, 1)),
        (-1, datetime(1969, 12, 31, 23, 59, 59, 999999)),
        (1795523674893171, datetime(2026, 11, 24, 12, 34, 34, 893171)),
        (-1234567890123457, datetime(1930, 11, 18, 0, 28, 29, 876543)),
        (-62135596800000000, datetime(1, 1, 1)),  # datetime.min
        (253402300799999999, datetime(9999, 12, 31, 23, 59, 59, 999999)),  # datetime.max
    ],
)
def test_microsecond_timestamps_are_exact_and_naive(micros: int, expected: datetime) -> None:
    run = map_row(legacy_row(created_at=micros)).run
    assert run.created_at == expected
    assert run.created_at is not None and run.created_at.tzinfo is None


def test_psycopg_datetimes_pass_through_unchanged() -> None:
    from_db = legacy_row(
        created_at=datetime(1955, 3, 1, 4, 5, 6, 7),
        updated_at=datetime(2024, 6, 10, 6, 13, 20, 123456),
        started_at=None,
        completed_at=datetime(9999, 12, 31, 23, 59, 59, 999999),
    )
    from_wal = dict(
        from_db,
        created_at=(datetime(1955, 3, 1, 4, 5, 6, 7) - EPOCH) // US,
        updated_at=1718000000123456,
        completed_at=MAX_US,
    )
    assert map_to_tuple(from_db) == map_to_tuple(from_wal)


# --------------------------------------------------------------------------- total_cost


def _f32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


@pytest.mark.parametrize(
    ("exact", "printed"),
    [
        (123456.7890625, 123456.79),  # Avro's float32 of 123456.79
        (1.100000023841858, 1.1),
        (_f32(0.1), 0.1),
        (2.0**-10, 0.0009765625),  # a power of two: its interval is lopsided
        (35616752.0, 35616752.0),  # 35616750 reads back, but only as a tie: never printed
        (_f32(3.4028234663852886e38), 3.4028235e38),  # the largest float32
        (1.401298464324817e-45, 1e-45),  # the smallest
        (-_f32(2.5e-7), -2.5e-7),
        (0.0, 0.0),
        (float("inf"), float("inf")),
    ],
)
def test_real_value_is_the_shortest_text_of_a_float32(exact: float, printed: float) -> None:
    assert real_value(exact) == printed


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_real_value_reads_back_as_the_same_float32_and_no_shorter_text_does(x: float) -> None:
    value = real_value(x)
    assert _f32(value) == x
    digits = len("".join(map(str, Decimal(repr(value)).as_tuple().digits)).rstrip("0"))
    assert digits <= 9
    if digits > 1 and x:
        shorter = f"{x:.{digits - 2}e}"  # the nearest decimal one digit shorter
        # a decimal exactly halfway between two float32 values reads back by ties-to-even,
        # but is the text of neither (PostgreSQL prints 63402608, not 63402610)
        if not _halfway(Decimal(shorter), x):
            assert _f32(float(shorter)) != x or float(shorter) == value


def _halfway(decimal: Decimal, x: float) -> bool:
    """``decimal`` lies exactly halfway between the float32 ``x`` and a neighbour."""
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    neighbours = [struct.unpack("<f", struct.pack("<I", b))[0] for b in (bits - 1, bits + 1)]
    return any((Decimal(x) + Decimal(n)) / 2 == decimal for n in neighbours)


@pytest.mark.parametrize("x", [63402608.0, 35616752.0])
def test_a_shorter_text_halfway_between_two_float32_is_not_taken(x: float) -> None:
    value = real_value(x)
    assert value == x  # the shortest text that is not a tie: all its digits


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1234.5679, "1234.5679"),  # a REAL printed as 1234.5679 (float32 1234.56787109375)
        (1.1, "1.1000"),
        (123456.79, "123456.7900"),  # REAL or DOUBLE PRECISION alike: the printed value
        (123456.7890625, "123456.7891"),  # a DOUBLE holding exactly that value
        (0.12345, "0.1235"),
        (12.34565, "12.3457"),  # the printed value is the tie: away from zero
        (0.00005, "0.0001"),
        (0.00004999, "0.0000"),
        (-0.12345, "-0.1235"),  # half-up is away from zero
        (-0.0, "0.0000"),
        (-0.00001, "0.0000"),  # no negative zero
        (0, "0.0000"),
        (5, "5.0000"),
        (999999.9375, "999999.9375"),  # the largest float32 below 10**6
        ("1234.56785", "1234.5679"),  # decimal.handling.mode=string: quantized directly
        ("0.00005", "0.0001"),
        ("-2.00005", "-2.0001"),
        ("999999.99994", "999999.9999"),
        (Decimal("12.34565"), "12.3457"),
    ],
)
def test_total_cost_rounding(value: Any, expected: str) -> None:
    cost = map_row(legacy_row(total_cost=value)).run.total_cost
    assert cost == Decimal(expected)
    assert str(cost) == expected  # always exactly four decimal places


# --------------------------------------------------------------------------- unavailable


@pytest.mark.parametrize(
    ("source", "target", "placeholder"),
    [
        ("result", "result_data", "{}"),
        ("error_message", "error_details", "{}"),
        ("message", "description", ""),
        ("workflow_name", "workflow_type", ""),
        ("status", "status", ""),
        ("session_name", "session_id", None),
        ("repository_url", "repository_url", None),
        ("git_branch", "git_branch", None),
        ("max_turns", "max_turns", None),
        ("created_at", "created_at", None),
        ("total_cost", "total_cost", None),
    ],
)
def test_unavailable_columns_are_reported_not_written(
    source: str, target: str, placeholder: Any
) -> None:
    result = map_row(legacy_row(**{source: UNAVAILABLE}))
    assert result.unavailable == frozenset({target})
    assert getattr(result.run, target) == placeholder
    assert UNAVAILABLE not in json.dumps(vars(result.run), default=str)


def test_several_unavailable_columns() -> None:
    row = legacy_row(result=UNAVAILABLE, error_message=UNAVAILABLE, message=UNAVAILABLE)
    values, unavailable = map_to_tuple(row)
    assert unavailable == {"result_data", "error_details", "description"}
    assert UNAVAILABLE not in values
    assert map_row(legacy_row()).unavailable == frozenset()


# --------------------------------------------------------------------------- errors

BAD_ROWS = [
    # (changes to a valid row, column named in the message, words in the message)
    ({"id": None}, "id", "NULL"),
    ({"id": 17}, "id", "expected text"),
    ({"id": UNAVAILABLE}, "id", "placeholder"),
    ({"workflow_name": None}, "workflow_name", "NOT NULL"),
    ({"message": None}, "message", "NOT NULL"),
    ({"message": ["x"]}, "message", "expected text"),
    ({"message": "a\x00b"}, "message", "NUL"),
    ({"git_branch": "bad \ud800 surrogate"}, "git_branch", "not valid Unicode"),
    ({"result": "bad \udfff"}, "result", "not valid Unicode"),
    ({"result": 5}, "result", "expected text"),
    ({"status": 1}, "status", "expected text"),
    ({"max_turns": 2**31}, "max_turns", "outside the INTEGER range"),
    ({"max_turns": -(2**31) - 1}, "max_turns", "outside the INTEGER range"),
    ({"max_turns": "30"}, "max_turns", "expected an integer"),
    ({"max_turns": True}, "max_turns", "expected an integer"),
    ({"max_turns": 30.0}, "max_turns", "expected an integer"),
    ({"execution_time": 10**12}, "execution_time", "outside the INTEGER range"),
    ({"total_cost": float("nan")}, "total_cost", "not a finite number"),
    ({"total_cost": float("inf")}, "total_cost", "not a finite number"),
    ({"total_cost": float("-inf")}, "total_cost", "not a finite number"),
    ({"total_cost": "NaN"}, "total_cost", "not a finite number"),
    ({"total_cost": "Infinity"}, "total_cost", "not a finite number"),
    ({"total_cost": 1e6}, "total_cost", "does not fit DECIMAL(10,4)"),
    ({"total_cost": -1e6}, "total_cost", "does not fit DECIMAL(10,4)"),
    ({"total_cost": "999999.99995"}, "total_cost", "rounds to 1000000.0000"),
    ({"total_cost": 1e39}, "total_cost", "does not fit DECIMAL(10,4)"),
    ({"total_cost": "1e400000"}, "total_cost", "does not fit DECIMAL(10,4)"),
    ({"total_cost": "12 dollars"}, "total_cost", "not a decimal number"),
    ({"total_cost": True}, "total_cost", "expected a number"),
    ({"created_at": MAX_US + 1}, "created_at", "outside the datetime range"),
    ({"created_at": MIN_US - 1}, "created_at", "outside the datetime range"),
    ({"created_at": 2**70}, "created_at", "outside the datetime range"),
    ({"updated_at": datetime(2024, 1, 1, tzinfo=UTC)}, "updated_at", "time-zone aware"),
    ({"started_at": "2024-01-01T00:00:00"}, "started_at", "expected integer microseconds"),
    ({"completed_at": 1.5e15}, "completed_at", "expected integer microseconds"),
]


@pytest.mark.parametrize(("changes", "column", "words"), BAD_ROWS)
def test_invalid_rows_raise_a_precise_mapping_error(
    changes: dict[str, Any], column: str, words: str
) -> None:
    for mapper in (map_row, map_to_tuple):
        with pytest.raises(MappingError) as caught:
            mapper(legacy_row(**changes))
        assert caught.value.reason == "mapping_error"
        message = str(caught.value)
        assert f"workflow_processes.{column}" in message
        assert words in message


@pytest.mark.parametrize("column", SOURCE_COLUMNS)
def test_a_missing_column_is_an_error_not_a_null(column: str) -> None:
    row = legacy_row()
    del row[column]
    for mapper in (map_row, map_to_tuple):
        with pytest.raises(MappingError, match=f"workflow_processes.{column}.*missing") as caught:
            mapper(row)
        assert caught.value.reason == "schema_mismatch"  # dropped or renamed in the source


def test_the_error_names_the_row() -> None:
    with pytest.raises(MappingError, match=r"\(row id 'wp-9'\)"):
        map_row(legacy_row(id="wp-9", message=None))


def test_a_non_mapping_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="mapping"):
        map_row(["wp-1", "x"])  # type: ignore[arg-type]


def test_aware_datetime_with_zero_offset_is_still_rejected() -> None:
    with pytest.raises(MappingError):
        map_row(legacy_row(created_at=datetime(2024, 1, 1, tzinfo=timezone(timedelta(0)))))


# --------------------------------------------------------------------------- the values


def test_every_mapped_value_fits_its_target_column() -> None:
    for row in (
        legacy_row(),
        legacy_row(**dict.fromkeys(["max_turns", "created_at", "total_cost", "status"])),
        legacy_row(total_cost=0.0, max_turns=INT32_MAX, execution_time=INT32_MIN),
    ):
        assert_valid_target_row(map_to_tuple(row)[0])


def test_workflow_run_avro_schema_round_trips_a_run() -> None:
    schema = fastavro.parse_schema(json.loads((SCHEMAS / "avro" / "workflow_run.avsc").read_text()))
    assert [f["name"] for f in schema["fields"]] == list(TARGET_COLUMNS)
    for row in (
        legacy_row(),
        legacy_row(**dict.fromkeys(["max_turns", "created_at", "total_cost"])),
    ):
        run = vars(map_row(row).run)
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, run)
        buffer.seek(0)
        assert fastavro.schemaless_reader(buffer, schema, None) == run


# --------------------------------------------------------------------------- properties

plain_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))
any_text = st.text(st.characters(codec="utf-8"))
int32 = st.integers(-(2**31), 2**31 - 1)
micros = st.integers(MIN_US, MAX_US)
costs = st.floats(
    min_value=-999999.9375, max_value=999999.9375, allow_nan=False, allow_infinity=False, width=32
)
legacy_rows = st.fixed_dictionaries(
    {
        "id": plain_text,
        "workflow_name": plain_text,
        "message": plain_text,
        "max_turns": st.none() | int32,
        "session_name": st.none() | plain_text,
        "git_branch": st.none() | plain_text,
        "repository_url": st.none() | plain_text,
        "created_at": st.none() | micros,
        "updated_at": st.none() | micros | st.datetimes(),
        "status": st.none() | plain_text,
        "result": st.none() | any_text,
        "error_message": st.none() | any_text,
        "execution_time": st.none() | int32,
        "total_cost": st.none() | costs,
        "started_at": st.none() | micros,
        "completed_at": st.none() | st.datetimes(),
    }
)


@given(legacy_rows)
def test_any_valid_legacy_row_maps_to_a_valid_run(row: dict[str, Any]) -> None:
    result = map_row(row)
    run = result.run
    assert result.unavailable == frozenset() or UNAVAILABLE in row.values()
    assert_valid_target_row(map_to_tuple(row)[0])
    assert run.run_id == row["id"]
    assert run.status == ("pending" if row["status"] is None else row["status"])
    for column in ("result_data", "error_details", "tags", "metadata", "progress_data"):
        json.loads(getattr(run, column))
    if row["total_cost"] is not None:
        printed = Decimal(repr(row["total_cost"]))  # what PostgreSQL and Debezium print
        assert run.total_cost == printed.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


@given(any_text)
def test_json_wrapping_round_trips_any_text(text: str) -> None:
    run = map_row(legacy_row(result=text, error_message=text)).run
    assert json.loads(run.result_data) == {"result": text}
    assert json.loads(run.error_details) == {"error": text}
    assert run.result_data == json.dumps({"result": text}, ensure_ascii=False)


@given(micros)
def test_microsecond_timestamps_round_trip(value: int) -> None:
    run = map_row(legacy_row(started_at=value)).run
    assert run.started_at is not None
    assert (run.started_at - EPOCH) // US == value
    assert map_row(legacy_row(started_at=run.started_at)).run.started_at == run.started_at
