"""A snapshot read's timestamps: JDBC's Julian reading before 1582-10-15 undone."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.errors import EventError
from replicator.events import ChangeEvent, KafkaPosition, Op
from replicator.mapping.calendar import (
    AMBIGUOUS_UNTIL_US,
    DAY_US,
    REFORM_US,
    CalendarError,
    snapshot_micros,
)
from replicator.mapping.columns import SOURCE_COLUMNS, TARGET_COLUMNS
from replicator.stream.apply.transform import hold, is_hold, to_row_change

EPOCH = datetime(1970, 1, 1)


def micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def julian_jdn(year: int, month: int, day: int) -> int:
    """The Julian day number of a Julian calendar date (an independent formula)."""
    a = (14 - month) // 12
    y, m = year + 4800 - a, month + 12 * a - 3
    return day + (153 * m + 2) // 5 + 365 * y + y // 4 - 32083


def as_jdbc_reads(value: datetime) -> int:
    """What Debezium's snapshot emits for the PostgreSQL value ``value``: its fields taken
    as a Julian date before the reform, as the Gregorian date after it."""
    if value >= datetime(1582, 10, 15):
        return micros(value)
    day = julian_jdn(value.year, value.month, value.day) - 2_440_588
    within = micros(value) - micros(datetime(value.year, value.month, value.day))
    return day * DAY_US + within


@pytest.mark.parametrize(
    ("source", "emitted"),
    [
        (datetime(1500, 6, 1, 12), datetime(1500, 6, 11, 12)),  # ten days late
        (datetime(1582, 10, 4, 23, 59, 59, 999999), datetime(1582, 10, 14, 23, 59, 59, 999999)),
        (datetime(1000, 3, 1), datetime(1000, 3, 7)),  # six days: 1000 is a Julian leap year
    ],
)
def test_dates_before_the_reform_come_back_exactly(source: datetime, emitted: datetime) -> None:
    assert as_jdbc_reads(source) == micros(emitted)
    assert snapshot_micros(micros(emitted)) == micros(source)


def test_year_one_which_jdbc_moves_before_year_one() -> None:
    emitted = as_jdbc_reads(datetime(1, 1, 1))
    assert emitted == micros(datetime(1, 1, 1)) - 2 * DAY_US  # 0000-12-30: no datetime
    assert snapshot_micros(emitted) == micros(datetime(1, 1, 1))


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)))
def test_every_value_outside_the_ten_days_comes_back_exactly(value: datetime) -> None:
    if datetime(1582, 10, 5) <= value < datetime(1582, 10, 25):
        return
    assert snapshot_micros(as_jdbc_reads(value)) == micros(value)


@pytest.mark.parametrize("day", [5, 14, 15, 24])
def test_the_ten_days_jdbc_cannot_tell_apart_are_refused(day: int) -> None:
    emitted = as_jdbc_reads(datetime(1582, 10, day, 8))
    assert REFORM_US <= emitted < AMBIGUOUS_UNTIL_US
    with pytest.raises(CalendarError, match="cannot tell"):
        snapshot_micros(emitted)


def test_a_date_before_year_one_is_refused() -> None:
    with pytest.raises(CalendarError, match="before year 1"):
        snapshot_micros(micros(datetime(1, 1, 1)) - 400 * DAY_US)


def image(**timestamps: int | None) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(SOURCE_COLUMNS)
    row.update(id="wp-1", workflow_name="w", message="m", max_turns=30, status="pending")
    row.update(timestamps)
    return row


def event(op: Op, after: dict[str, object], snapshot: str | None = None) -> ChangeEvent:
    return ChangeEvent(op, "wp-1", None, after, 10, 1, snapshot, KafkaPosition("t", 0, 0))


def test_snapshot_reads_are_corrected_and_streamed_changes_left_alone() -> None:
    emitted = micros(datetime(1500, 6, 11, 12))  # what the snapshot sent for 1500-06-01
    created = TARGET_COLUMNS.index("created_at")
    for snapshot in ("true", "incremental"):
        read = to_row_change(event(Op.READ, image(created_at=emitted), snapshot))
        assert read is not None and read.values is not None
        assert read.values[created] == datetime(1500, 6, 1, 12)
    streamed = to_row_change(event(Op.UPDATE, image(created_at=emitted)))
    assert streamed is not None and streamed.values is not None
    assert streamed.values[created] == datetime(1500, 6, 11, 12)  # the WAL's text: exact


def test_an_ambiguous_snapshot_timestamp_is_dead_lettered_with_its_reason() -> None:
    emitted = as_jdbc_reads(datetime(1582, 10, 14))
    with pytest.raises(EventError) as err:
        to_row_change(event(Op.READ, image(started_at=emitted), "true"))
    assert err.value.reason == "snapshot_timestamp" and "started_at" in str(err.value)


def test_a_hold_for_a_known_row_of_a_generation_taken_again() -> None:
    held = hold("wp-1", 2)
    assert held is not None and is_hold(held)
    assert (held.run_id, held.lsn, held.generation, held.delete) == ("wp-1", 0, 2, False)
    assert hold("wp-1", 0) is None  # the first snapshot: no sweep to protect from
    assert hold(None, 2) is None  # no row known (a key that cannot be read)
    read = to_row_change(event(Op.READ, image(), "true"), generation=2)
    assert read is not None and not is_hold(read)
