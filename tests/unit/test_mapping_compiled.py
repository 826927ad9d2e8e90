"""The compiled mapper (rows._compile) gives exactly what the plan's converters give, value by
value, error by error, for any row: its inline fast paths are only a shortcut."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.errors import MappingError
from replicator.events import UNAVAILABLE
from replicator.mapping import converters, rows
from replicator.mapping.columns import PLAN_COST, SOURCE_COLUMNS, TARGET_COLUMNS, CostColumn
from replicator.mapping.rows import map_to_tuple


class _Text(str):
    """A str subclass: never the fast path's exact type."""


_ABSENT = object()
_INT32 = 2**31
_MICROS_MAX = 253402300799999999  # 9999-12-31 23:59:59.999999
_MICROS_MIN = -62135596800000000  # 0001-01-01

values = st.one_of(
    st.none(),
    st.just(_ABSENT),
    st.just(UNAVAILABLE),
    st.text(max_size=12),
    st.sampled_from(["plain", "résumé ✓", "nul\x00", "\ud800", "", UNAVAILABLE + "x"]),
    st.builds(_Text, st.text(max_size=5)),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.sampled_from(
        [_INT32 - 1, _INT32, -_INT32, -_INT32 - 1, _MICROS_MAX, _MICROS_MAX + 1, _MICROS_MIN]
    ),
    st.sampled_from([_MICROS_MIN - 1, True, False, 0, -0.0, 0.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e7, max_value=1e7).map(lambda f: round(f, 3)),
    st.decimals(allow_nan=True, allow_infinity=True, places=6),
    st.datetimes(),
    st.datetimes(timezones=st.just(UTC)),
)


def _reference(row: Mapping[str, Any], plan: rows.Plan) -> tuple[tuple[Any, ...], frozenset[str]]:
    """The plan read as a plain loop of its converters: the statement of the rules."""
    run_id = rows._key(row.get("id", converters.MISSING))
    out = list(rows._TEMPLATE)
    out[0] = run_id
    unavailable: list[str] = []
    for column, index, convert, if_null, placeholder in plan:
        value = row.get(column, converters.MISSING)
        if value is None:
            if if_null is converters.MISSING:
                raise rows._fail(column, run_id, "is NULL but the column is NOT NULL")
            out[index] = if_null
            continue
        out[index], more = rows._slow(
            convert, value, column, row["id"], placeholder, TARGET_COLUMNS[index], None
        )
        unavailable += more or []
    return tuple(out), frozenset(unavailable)


def _outcome(call: Any) -> Any:
    try:
        values, unavailable = call()
    except MappingError as exc:
        return ("error", exc.reason, str(exc))
    # the exact types and representations, not only equality (Decimal("1.1") == "1.1000")
    return [(type(v).__name__, repr(v)) for v in values], sorted(unavailable)


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({name: values for name in SOURCE_COLUMNS}))
def test_the_compiled_mapper_is_the_plan(drawn: dict[str, Any]) -> None:
    row = {name: value for name, value in drawn.items() if value is not _ABSENT}
    assert _outcome(lambda: map_to_tuple(row)) == _outcome(lambda: _reference(row, rows._PLAN))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(SOURCE_COLUMNS[1:]), values),
    st.sampled_from([CostColumn(12, 2), CostColumn(None, 4), CostColumn(4, 6)]),
)
def test_a_widened_cost_column_has_its_own_compiled_mapper(
    drawn: dict[str, Any], cost: CostColumn
) -> None:
    row = {"id": "wp-1", **{n: v for n, v in drawn.items() if v is not _ABSENT}}
    plan = tuple(
        (*step[:2], converters.cost_converter(cost), *step[3:]) if step[0] == "total_cost" else step
        for step in rows._PLAN
    )
    assert _outcome(lambda: map_to_tuple(row, cost)) == _outcome(lambda: _reference(row, plan))


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=-1e6, max_value=1e6).map(lambda f: round(f, 4)),
        st.integers(min_value=-(10**10), max_value=10**10).map(lambda i: i / 10**4),
    ),
    st.sampled_from([PLAN_COST, CostColumn(12, 2), CostColumn(None, 4), CostColumn(3, 0)]),
)
def test_a_float_cost_is_its_printed_decimal_rounded_half_up(
    value: float, cost: CostColumn
) -> None:
    """The converter's shortcut for costs printed with few decimals agrees with the rule:
    the decimal PostgreSQL prints, rounded half up to the scale, within the limit."""
    exact = Decimal(repr(value))
    expected: Any = exact.quantize(cost.quantum, ROUND_HALF_UP, Context(prec=400))
    if cost.limit is not None and (abs(exact) >= cost.limit or abs(expected) >= cost.limit):
        expected = "refused"
    elif not expected:
        expected = expected.copy_abs()
    convert = converters.cost_converter(cost)
    try:
        got: Any = convert(value)
    except converters.Problem:
        got = "refused"
    assert (str(got), type(got)) == (str(expected), type(expected))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_MICROS_MAX, datetime.max),
        (_MICROS_MIN, datetime.min),
        (0, datetime(1970, 1, 1)),
        (-1, datetime(1969, 12, 31, 23, 59, 59, 999999)),
    ],
)
def test_the_timestamp_fast_path_reaches_both_ends_of_the_calendar(
    value: int, expected: datetime
) -> None:
    row = {name: None for name in SOURCE_COLUMNS} | {"id": "wp-1", "workflow_name": "w"}
    row |= {"message": "m", "created_at": value}
    values, _ = map_to_tuple(row)
    assert values[TARGET_COLUMNS.index("created_at")] == expected


def test_just_past_either_end_of_the_calendar_is_refused_with_the_reason() -> None:
    row = {name: None for name in SOURCE_COLUMNS} | {"id": "wp-1", "workflow_name": "w"}
    for value in (_MICROS_MAX + 1, _MICROS_MIN - 1):
        with pytest.raises(MappingError, match="outside the datetime range"):
            map_to_tuple(row | {"message": "m", "created_at": value})


def test_an_unbounded_numeric_takes_any_float_and_refuses_what_postgresql_cannot_hold() -> None:
    """A widened ``NUMERIC`` cost: a float of any size maps (it once raised the decimal
    module's own error, not a mapping error); a text beyond NUMERIC's 131072 digits before
    the point is refused with the reason, without building the number."""
    row = {name: None for name in SOURCE_COLUMNS} | {"id": "wp-1", "workflow_name": "w"}
    row |= {"message": "m"}
    unbounded = CostColumn(None, 4)
    values, _ = map_to_tuple(row | {"total_cost": 1e300}, unbounded)
    assert values[TARGET_COLUMNS.index("total_cost")] == Decimal(10) ** 300
    with pytest.raises(MappingError, match="more digits than NUMERIC holds") as refused:
        map_to_tuple(row | {"total_cost": "1e200000"}, unbounded)
    assert refused.value.reason == "mapping_error"
