"""The converters of the mapping: one source value -> its target value, per column type.

Each converter takes a non-NULL source value and returns the target value, or
:data:`UNAVAILABLE_VALUE` for Debezium's placeholder; it raises :class:`Problem`, which
the mapper (:mod:`replicator.mapping.rows`) turns into a MappingError naming the column
and row.  The exact-type checks come first because this is the hot path; subclasses (and
bool, which is an int) take the slow branch.  :data:`FAST` states the common case of
each one as code the compiled mapper runs inline.  Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from json.encoder import encode_basestring as _json_string  # what ensure_ascii=False uses
from typing import Any

from replicator.events import UNAVAILABLE
from replicator.mapping.columns import INT32_MAX, INT32_MIN, CostColumn

MISSING: Any = object()
UNAVAILABLE_VALUE: Any = object()
EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
# PostgreSQL's NUMERIC: up to 131072 digits before the point and 16383 after; quantizing
# any value that fits needs at most that many digits (a float reaches 309 before it)
_NUMERIC_WHOLE = 131072
_DECIMAL_CONTEXT = Context(prec=_NUMERIC_WHOLE + 16383, rounding=ROUND_HALF_UP)


class Problem(Exception):
    """Raised by converters; the mapper turns it into a MappingError naming the column and row."""


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _wrong_type(value: Any, expected: str) -> Problem:
    return Problem(f"expected {expected}, got {type(value).__name__} {show(value)}")


def text(value: Any) -> Any:
    if value.__class__ is str:
        if value == UNAVAILABLE:
            return UNAVAILABLE_VALUE
        if "\x00" in value:
            raise Problem("text contains a NUL character, which PostgreSQL TEXT cannot store")
        if not value.isascii():
            _check_encodable(value)
        return value
    if isinstance(value, str):
        return text(str(value))
    raise _wrong_type(value, "text")


def _check_encodable(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Problem(f"text is not valid Unicode ({exc.reason} at index {exc.start})") from None


def json_wrapper(name: str) -> Callable[[Any], Any]:
    prefix = '{"' + name + '": '

    def wrap(value: Any) -> Any:
        if value.__class__ is not str:
            if not isinstance(value, str):
                raise _wrong_type(value, "text")
            value = str(value)
        if value == UNAVAILABLE:
            return UNAVAILABLE_VALUE
        if not value.isascii():
            _check_encodable(value)
        # Identical to json.dumps({name: value}, ensure_ascii=False), without the dict.
        return prefix + _json_string(value) + "}"

    braced = repr(prefix).replace("{", "{{")  # a template: its own braces doubled
    FAST[wrap] = (_ASCII_TEXT, braced + " + _json_string({v}) + '}}'")
    return wrap


def int32(value: Any) -> Any:
    if value.__class__ is int or (isinstance(value, int) and not isinstance(value, bool)):
        if INT32_MIN <= value <= INT32_MAX:
            return int(value)
        raise Problem(f"{value} is outside the INTEGER range [{INT32_MIN}, {INT32_MAX}]")
    if value.__class__ is str and value == UNAVAILABLE:
        return UNAVAILABLE_VALUE
    raise _wrong_type(value, "an integer")


def timestamp(value: Any) -> Any:
    if value.__class__ is int or (isinstance(value, int) and not isinstance(value, bool)):
        try:
            return EPOCH + timedelta(0, 0, int(value))  # positional: a third faster
        except OverflowError:
            raise Problem(
                f"{value} microseconds since 1970-01-01 is outside the datetime range "
                "(years 1 to 9999): a BC date or 'infinity' in the source, which this"
                " mapping does not carry over"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise Problem(
                f"expected a naive TIMESTAMP, got the time-zone aware {show(value)}; "
                "TIMESTAMP WITHOUT TIME ZONE values must not be shifted"
            )
        return value
    if value.__class__ is str and value == UNAVAILABLE:
        return UNAVAILABLE_VALUE
    raise _wrong_type(value, "integer microseconds since the epoch or a naive datetime")


def cost_converter(column: CostColumn) -> Callable[[Any], Any]:
    limit, quantum, kind, scale = column.limit, column.quantum, column.sql_type, column.scale
    # the most digits before the point a value that fits can have
    whole = 10**9 if column.precision is None else column.precision - column.scale

    def convert(value: Any) -> Any:
        if value.__class__ is float and value:
            # Most costs print with at most ``scale`` decimals ("12.5"): the quantized value
            # is then that text padded with zeros, with no rounding and no limit to check.
            text = repr(value)
            point = text.find(".")
            decimals = len(text) - point - 1
            if 0 < point <= whole + (text[0] == "-") and decimals <= scale and "e" not in text:
                return Decimal(text + "0" * (scale - decimals))
        exact = _exact_cost(value, kind)
        if exact is UNAVAILABLE_VALUE:
            return exact
        if limit is not None and abs(exact) >= limit:
            raise Problem(f"{show(value)} does not fit {kind} (|value| must be < {limit:,})")
        if exact and exact.adjusted() >= _NUMERIC_WHOLE:
            raise Problem(f"{show(value)} has more digits than {kind} holds before the point")
        cost = exact.quantize(quantum, rounding=ROUND_HALF_UP, context=_DECIMAL_CONTEXT)
        if limit is not None and abs(cost) >= limit:
            raise Problem(f"{show(value)} rounds to {cost}, which does not fit {kind}")
        return cost if cost else cost.copy_abs()  # no negative zero

    return convert


def _exact_cost(value: Any, kind: str) -> Any:
    cls = value.__class__
    if cls is float or isinstance(value, float):
        if not math.isfinite(value):
            raise Problem(f"{value} is not a finite number; {kind} cannot hold it")
        return Decimal(repr(value))  # the decimal PostgreSQL and Debezium print
    if cls is str or cls is Decimal or isinstance(value, str | Decimal):
        if value == UNAVAILABLE:
            return UNAVAILABLE_VALUE
        try:
            exact = Decimal(value)
        except (InvalidOperation, ValueError):
            raise Problem(f"{show(value)} is not a decimal number") from None
        if not exact.is_finite():
            raise Problem(f"{show(value)} is not a finite number; {kind} cannot hold it")
        return exact
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    raise _wrong_type(value, "a number")


# The common case of a converter, inline in the compiled mapper (_compile): a condition on
# the source value ``{v}`` under which the converter returns the expression, exactly.
_ASCII_TEXT = "{v}.__class__ is str and {v}.isascii() and {v} != _U"
_TIMESTAMPS = (EPOCH - datetime.min) // _MICROSECOND, (datetime.max - EPOCH) // _MICROSECOND
FAST: dict[Callable[[Any], Any], tuple[str, str]] = {
    text: (_ASCII_TEXT + " and '\\x00' not in {v}", "{v}"),
    int32: (f"{{v}}.__class__ is int and {INT32_MIN} <= {{v}} <= {INT32_MAX}", "{v}"),
    timestamp: (
        f"{{v}}.__class__ is int and {-_TIMESTAMPS[0]} <= {{v}} <= {_TIMESTAMPS[1]}",
        "EPOCH + timedelta(0, 0, {v})",
    ),
}
