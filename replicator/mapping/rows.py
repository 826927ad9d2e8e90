"""The transform stage: one legacy ``workflow_processes`` row -> one ``workflow_runs`` row.

Pure functions, no I/O.  The input is the row as Debezium's JSON (or Avro) payload
gives it -- timestamps as integer microseconds since the epoch of the wall-clock
value -- or as psycopg reads it from the source table (naive ``datetime`` values).

The mapping is the migration plan's table with the rulings of design.md
("Guarantees", item 4):

* ``result`` -> ``{"result": <text>}`` and ``error_message`` -> ``{"error": <text>}``
  as JSON text (``json.dumps(..., ensure_ascii=False)``, default separators), ``{}``
  when NULL;
* a NULL ``status`` becomes ``'pending'``; every other NULL stays NULL (no defaults
  are applied to ``max_turns``, ``created_at`` or ``updated_at``);
* new columns get the plan's defaults: ``user_id`` NULL, ``priority`` ``'normal'``,
  ``tags`` ``[]``, ``metadata``/``progress_data``/``resource_usage`` ``{}``;
* timestamps keep their microseconds and are never shifted: the result is naive;
* ``total_cost`` is the value as PostgreSQL prints it -- the shortest decimal that reads
  back as the same number -- rounded half away from zero to 4 decimal places, as
  ``DECIMAL(10,4)`` can hold it.  Debezium's JSON prints a REAL (and a DOUBLE PRECISION,
  after a widening) that way too, and :func:`repr` of the float parsed from that text
  gives the text back: a float's repr is the shortest decimal that reads back as it, and
  no other decimal as short as Debezium's (the shortest for a DOUBLE, at most 9 digits for
  a REAL) lies within half a float's step of the same value, so the events need
  no column types: ``123456.79`` maps to ``123456.7900`` whether the column is a REAL or
  a DOUBLE PRECISION.  Where a float32 arrives as its exact binary value (Avro, a binary
  COPY) the reader first turns it into its shortest text with :func:`real_value`.

A source value equal to Debezium's :data:`~replicator.events.UNAVAILABLE` placeholder
(an unchanged TOASTed column) is never mapped: the target column is reported in
the unavailable columns :func:`map_to_tuple` returns, and the sink leaves it untouched.

Every invalid input raises :class:`~replicator.errors.MappingError` (reason
``mapping_error``, or ``schema_mismatch`` for a column the row lacks) whose message
names the column, the row id and the problem.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from fractions import Fraction
from json.encoder import encode_basestring as _json_string  # what ensure_ascii=False uses
from typing import Any

from replicator.errors import MappingError
from replicator.events import UNAVAILABLE
from replicator.mapping.columns import (
    INT32_MAX,
    INT32_MIN,
    JSON_WRAPPED,
    NEW_COLUMN_DEFAULTS,
    PLAN_COST,
    SOURCE_COLUMNS,
    SOURCE_TABLE,
    TARGET_COLUMNS,
    TARGET_INDEX,
    CostColumn,
)

__all__ = ["map_to_tuple"]


# --------------------------------------------------------------------------- converters
#
# Each converter takes a non-NULL source value and returns the target value, or
# _UNAVAILABLE for Debezium's placeholder; it raises _Problem, which _convert turns into
# a MappingError naming the column and row.  The exact-type checks come first because
# this is the hot path; subclasses (and bool, which is an int) take the slow branch.

_MISSING: Any = object()
_UNAVAILABLE: Any = object()
_EPOCH = datetime(1970, 1, 1)
_F32 = struct.Struct("<f")
_F32_BITS = struct.Struct("<I")
_F32_MAX = 3.4028234663852886e38
_DECIMAL_CONTEXT = Context(prec=28, rounding=ROUND_HALF_UP)


class _Problem(Exception):
    """Raised by converters; turned into a MappingError naming the row by _convert."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _wrong_type(value: Any, expected: str) -> _Problem:
    return _Problem(f"expected {expected}, got {type(value).__name__} {_show(value)}")


def _text(value: Any) -> Any:
    if value.__class__ is str:
        if value == UNAVAILABLE:
            return _UNAVAILABLE
        if "\x00" in value:
            raise _Problem("text contains a NUL character, which PostgreSQL TEXT cannot store")
        if not value.isascii():
            _check_encodable(value)
        return value
    if isinstance(value, str):
        return _text(str(value))
    raise _wrong_type(value, "text")


def _check_encodable(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Problem(f"text is not valid Unicode ({exc.reason} at index {exc.start})") from None


def _json_wrapper(name: str) -> Callable[[Any], Any]:
    prefix = '{"' + name + '": '

    def wrap(value: Any) -> Any:
        if value.__class__ is not str:
            if not isinstance(value, str):
                raise _wrong_type(value, "text")
            value = str(value)
        if value == UNAVAILABLE:
            return _UNAVAILABLE
        if not value.isascii():
            _check_encodable(value)
        # Identical to json.dumps({name: value}, ensure_ascii=False), without the dict.
        return prefix + _json_string(value) + "}"

    return wrap


def _int32(value: Any) -> Any:
    if value.__class__ is int or (isinstance(value, int) and not isinstance(value, bool)):
        if INT32_MIN <= value <= INT32_MAX:
            return int(value)
        raise _Problem(f"{value} is outside the INTEGER range [{INT32_MIN}, {INT32_MAX}]")
    if value.__class__ is str and value == UNAVAILABLE:
        return _UNAVAILABLE
    raise _wrong_type(value, "an integer")


def _timestamp(value: Any) -> Any:
    if value.__class__ is int or (isinstance(value, int) and not isinstance(value, bool)):
        try:
            return _EPOCH + timedelta(0, 0, int(value))  # positional: a third faster
        except OverflowError:
            raise _Problem(
                f"{value} microseconds since 1970-01-01 is outside the datetime range "
                "(years 1 to 9999): a BC date or 'infinity' in the source, which this"
                " mapping does not carry over"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise _Problem(
                f"expected a naive TIMESTAMP, got the time-zone aware {_show(value)}; "
                "TIMESTAMP WITHOUT TIME ZONE values must not be shifted"
            )
        return value
    if value.__class__ is str and value == UNAVAILABLE:
        return _UNAVAILABLE
    raise _wrong_type(value, "integer microseconds since the epoch or a naive datetime")


def _cost_converter(column: CostColumn) -> Callable[[Any], Any]:
    limit, quantum, kind = column.limit, column.quantum, column.sql_type

    def convert(value: Any) -> Any:
        exact = _exact_cost(value, kind)
        if exact is _UNAVAILABLE:
            return exact
        if limit is not None and abs(exact) >= limit:
            raise _Problem(f"{_show(value)} does not fit {kind} (|value| must be < {limit:,})")
        cost = exact.quantize(quantum, rounding=ROUND_HALF_UP, context=_DECIMAL_CONTEXT)
        if limit is not None and abs(cost) >= limit:
            raise _Problem(f"{_show(value)} rounds to {cost}, which does not fit {kind}")
        return cost if cost else cost.copy_abs()  # no negative zero

    return convert


def _exact_cost(value: Any, kind: str) -> Any:
    cls = value.__class__
    if cls is float or isinstance(value, float):
        if not math.isfinite(value):
            raise _Problem(f"{value} is not a finite number; {kind} cannot hold it")
        return Decimal(repr(value))  # the decimal PostgreSQL and Debezium print
    if cls is str or cls is Decimal or isinstance(value, str | Decimal):
        if value == UNAVAILABLE:
            return _UNAVAILABLE
        try:
            exact = Decimal(value)
        except (InvalidOperation, ValueError):
            raise _Problem(f"{_show(value)} is not a decimal number") from None
        if not exact.is_finite():
            raise _Problem(f"{_show(value)} is not a finite number; {kind} cannot hold it")
        return exact
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    raise _wrong_type(value, "a number")


# (source column, target index, converter, value when NULL or _MISSING for NOT NULL,
#  placeholder when unavailable).  ``id`` is handled before the loop.
_IDX = TARGET_INDEX
Plan = tuple[tuple[str, int, Callable[[Any], Any], Any, Any], ...]
_PLAN: Plan = (
    ("workflow_name", _IDX["workflow_type"], _text, _MISSING, ""),
    ("message", _IDX["description"], _text, _MISSING, ""),
    ("max_turns", _IDX["max_turns"], _int32, None, None),
    ("session_name", _IDX["session_id"], _text, None, None),
    ("git_branch", _IDX["git_branch"], _text, None, None),
    ("repository_url", _IDX["repository_url"], _text, None, None),
    ("created_at", _IDX["created_at"], _timestamp, None, None),
    ("updated_at", _IDX["updated_at"], _timestamp, None, None),
    ("status", _IDX["status"], _text, "pending", ""),
    ("result", _IDX["result_data"], _json_wrapper(JSON_WRAPPED["result"]), "{}", "{}"),
    (
        "error_message",
        _IDX["error_details"],
        _json_wrapper(JSON_WRAPPED["error_message"]),
        "{}",
        "{}",
    ),
    ("execution_time", _IDX["execution_time_ms"], _int32, None, None),
    ("total_cost", _IDX["total_cost"], _cost_converter(PLAN_COST), None, None),
    ("started_at", _IDX["started_at"], _timestamp, None, None),
    ("completed_at", _IDX["completed_at"], _timestamp, None, None),
)
assert len(_PLAN) + 1 == len(SOURCE_COLUMNS)

# Target values of the columns the legacy table does not have: the plan's defaults.
_TEMPLATE: tuple[Any, ...] = tuple(NEW_COLUMN_DEFAULTS.get(name) for name in TARGET_COLUMNS)
_NO_COLUMNS: frozenset[str] = frozenset()


def _fail(column: str, row_id: Any, problem: str, reason: str = "mapping_error") -> MappingError:
    where = "" if row_id is _MISSING else f" (row id {_show(row_id)})"
    return MappingError(f"{SOURCE_TABLE}.{column}{where}: {problem}", reason=reason)


def _missing(column: str, row_id: Any) -> MappingError:
    """A column the mapping reads is absent from the row: dropped or renamed in the source.
    Never mapped as NULL (that would erase the target's value): dead-lettered."""
    return _fail(
        column,
        row_id,
        "column is missing from the row (dropped or renamed in the source?)",
        reason="schema_mismatch",
    )


@functools.lru_cache(maxsize=8)
def _plan_for(cost: CostColumn) -> Plan:
    """The plan with ``total_cost`` checked against ``cost``."""
    if cost == PLAN_COST:
        return _PLAN
    converter = _cost_converter(cost)
    return tuple(
        (*step[:2], converter, *step[3:]) if step[0] == "total_cost" else step for step in _PLAN
    )


def _convert(row: Mapping[str, Any], plan: Plan) -> tuple[tuple[Any, ...], frozenset[str]]:
    try:
        get = row.get
    except AttributeError:
        raise MappingError(
            f"expected the legacy row as a mapping of column names, got {type(row).__name__}",
            reason="mapping_error",
        ) from None
    row_id = get("id", _MISSING)
    if row_id is _MISSING:
        raise _missing("id", _MISSING)
    if row_id is None:
        raise _fail("id", _MISSING, "is NULL; the primary key is required")
    try:
        run_id = _text(row_id)
    except _Problem as exc:
        raise _fail("id", _MISSING, str(exc)) from None
    if run_id is _UNAVAILABLE:
        raise _fail("id", _MISSING, "is Debezium's unavailable-value placeholder")

    out = list(_TEMPLATE)
    out[0] = run_id
    unavailable: list[str] | None = None
    for column, index, convert, if_null, placeholder in plan:
        value = get(column, _MISSING)
        if value is None:
            if if_null is _MISSING:
                raise _fail(column, row_id, "is NULL but the column is NOT NULL")
            out[index] = if_null
            continue
        if value is _MISSING:
            raise _missing(column, row_id)
        try:
            value = convert(value)
        except _Problem as exc:
            raise _fail(column, row_id, str(exc)) from None
        if value is _UNAVAILABLE:
            value = placeholder
            if unavailable is None:
                unavailable = []
            unavailable.append(TARGET_COLUMNS[index])
        out[index] = value
    return tuple(out), (frozenset(unavailable) if unavailable else _NO_COLUMNS)


# --------------------------------------------------------------------------- public API


def _reads_back(decimal: str | Decimal, value: float) -> bool:
    """``decimal`` reads as the float32 ``value``, and not as a tie with a neighbour: a
    decimal exactly halfway between two float32 values is never printed for either (as in
    PostgreSQL's output: 35616750 is not the text of 35616752)."""
    try:
        if _F32.unpack(_F32.pack(float(decimal)))[0] != value:
            return False
    except OverflowError:  # beyond the largest float32
        return False
    bits = _F32_BITS.unpack(_F32.pack(abs(value)))[0]
    exact, point = Fraction(abs(value)), abs(Fraction(str(decimal)))
    below = Fraction(_F32.unpack(_F32_BITS.pack(bits - 1))[0])
    above = Fraction(_F32.unpack(_F32_BITS.pack(bits + 1))[0]) if abs(value) < _F32_MAX else None
    low = (below + exact) / 2
    high = (exact + above) / 2 if above is not None else exact + (exact - below) / 2
    return low < point < high


def real_value(value: float) -> float:
    """A float32 given as its exact binary value (Avro's ``float``, a binary COPY of a
    REAL) as the float of its shortest text, the text PostgreSQL prints for it
    (``123456.7890625`` -> ``123456.79``): the mapping then reads what a JSON event carries.

    The shortest decimal that reads back as ``value`` has the fewest significant digits
    ``p`` for which one exists.  The float32 values that read as ``value`` lie in an
    interval around it, symmetric unless ``value`` is a power of two (the float32 below is
    then closer than the one above): in the symmetric case ``value`` rounded to ``p`` digits
    is the closest ``p``-digit decimal, so it reads back if any does; at a power of two a
    neighbour of it may read back instead, and of those that do the closest wins, as in
    PostgreSQL's shortest-exact output.  A non-finite value is returned as is.
    """
    if not math.isfinite(value) or not value or abs(value) > _F32_MAX:
        return value
    power_of_two = _F32_BITS.unpack(_F32.pack(value))[0] & 0x7FFFFF == 0
    for digits in range(1, 10):
        text = f"{value:.{digits - 1}e}"
        if not power_of_two:
            if _reads_back(text, value):
                return float(text)
            continue
        nearest = Decimal(text)
        step = Decimal(1).scaleb(nearest.adjusted() - digits + 1)
        fits = [d for d in (nearest, nearest - step, nearest + step) if _reads_back(d, value)]
        if fits:
            return float(min(fits, key=lambda d: abs(d - Decimal(value))))
    return value  # not a float32 (more than 9 digits): its own text already


def map_to_tuple(
    row: Mapping[str, Any], cost: CostColumn = PLAN_COST
) -> tuple[tuple[Any, ...], frozenset[str]]:
    """Map a legacy row to the target values in :data:`TARGET_COLUMNS` order.

    Returns ``(values, unavailable target columns)``; JSON columns as JSON text,
    timestamps naive.  An unavailable column holds a harmless placeholder (``""`` for the
    NOT NULL text columns, ``"{}"`` for ``result_data``/``error_details``, ``None``
    otherwise), never Debezium's placeholder string.  ``cost``: the target's
    ``total_cost`` type, whose limits the value must fit.  Raises :class:`MappingError`.
    """
    return _convert(row, _plan_for(cost))
