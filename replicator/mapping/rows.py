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
  COPY) the reader first turns it into its shortest text with
  :func:`~replicator.mapping.reals.real_value`.

A source value equal to Debezium's :data:`~replicator.events.UNAVAILABLE` placeholder
(an unchanged TOASTed column) is never mapped: the target column is reported in
the unavailable columns :func:`map_to_tuple` returns, and the sink leaves it untouched.

Every invalid input raises :class:`~replicator.errors.MappingError` (reason
``mapping_error``, or ``schema_mismatch`` for a column the row lacks) whose message
names the column, the row id and the problem.
"""

from __future__ import annotations

import functools
import linecache
from collections.abc import Callable, Mapping
from datetime import timedelta
from json.encoder import encode_basestring as _json_string  # what ensure_ascii=False uses
from typing import Any

from replicator.errors import MappingError
from replicator.events import UNAVAILABLE
from replicator.mapping.columns import (
    JSON_WRAPPED,
    NEW_COLUMN_DEFAULTS,
    PLAN_COST,
    SOURCE_COLUMNS,
    SOURCE_TABLE,
    TARGET_COLUMNS,
    TARGET_INDEX,
    CostColumn,
)
from replicator.mapping.converters import (
    EPOCH,
    FAST,
    MISSING,
    UNAVAILABLE_VALUE,
    Problem,
    cost_converter,
    int32,
    json_wrapper,
    show,
    text,
    timestamp,
)

__all__ = ["map_to_tuple"]


# (source column, target index, converter, value when NULL or MISSING for NOT NULL,
#  placeholder when unavailable).  ``id`` is handled before the loop.
_IDX = TARGET_INDEX
Plan = tuple[tuple[str, int, Callable[[Any], Any], Any, Any], ...]
_PLAN: Plan = (
    ("workflow_name", _IDX["workflow_type"], text, MISSING, ""),
    ("message", _IDX["description"], text, MISSING, ""),
    ("max_turns", _IDX["max_turns"], int32, None, None),
    ("session_name", _IDX["session_id"], text, None, None),
    ("git_branch", _IDX["git_branch"], text, None, None),
    ("repository_url", _IDX["repository_url"], text, None, None),
    ("created_at", _IDX["created_at"], timestamp, None, None),
    ("updated_at", _IDX["updated_at"], timestamp, None, None),
    ("status", _IDX["status"], text, "pending", ""),
    ("result", _IDX["result_data"], json_wrapper(JSON_WRAPPED["result"]), "{}", "{}"),
    (
        "error_message",
        _IDX["error_details"],
        json_wrapper(JSON_WRAPPED["error_message"]),
        "{}",
        "{}",
    ),
    ("execution_time", _IDX["execution_time_ms"], int32, None, None),
    ("total_cost", _IDX["total_cost"], cost_converter(PLAN_COST), None, None),
    ("started_at", _IDX["started_at"], timestamp, None, None),
    ("completed_at", _IDX["completed_at"], timestamp, None, None),
)
assert len(_PLAN) + 1 == len(SOURCE_COLUMNS)

# Target values of the columns the legacy table does not have: the plan's defaults.
_TEMPLATE: tuple[Any, ...] = tuple(NEW_COLUMN_DEFAULTS.get(name) for name in TARGET_COLUMNS)
_NO_COLUMNS: frozenset[str] = frozenset()


def _fail(column: str, row_id: Any, problem: str, reason: str = "mapping_error") -> MappingError:
    where = "" if row_id is MISSING else f" (row id {show(row_id)})"
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


def _key(row_id: Any) -> str:
    """The run_id of a row whose ``id`` is not plain ASCII text, or why it has none."""
    if row_id is MISSING:
        raise _missing("id", MISSING)
    if row_id is None:
        raise _fail("id", MISSING, "is NULL; the primary key is required")
    try:
        run_id = text(row_id)
    except Problem as exc:
        raise _fail("id", MISSING, str(exc)) from None
    if run_id is UNAVAILABLE_VALUE:
        raise _fail("id", MISSING, "is Debezium's unavailable-value placeholder")
    return str(run_id)


def _not_a_mapping(row: Any) -> MappingError:
    return MappingError(
        f"expected the legacy row as a mapping of column names, got {type(row).__name__}",
        reason="mapping_error",
    )


def _slow(
    convert: Callable[[Any], Any],
    value: Any,
    column: str,
    row_id: Any,
    placeholder: Any,
    target: str,
    unavailable: list[str] | None,
) -> tuple[Any, list[str] | None]:
    """A value the fast path did not take: absent, of another type, unavailable or wrong."""
    if value is MISSING:
        raise _missing(column, row_id)
    try:
        value = convert(value)
    except Problem as exc:
        raise _fail(column, row_id, str(exc)) from None
    if value is UNAVAILABLE_VALUE:
        return placeholder, [*(unavailable or ()), target]
    return value, unavailable


Mapper = Callable[[Mapping[str, Any]], tuple[tuple[Any, ...], frozenset[str]]]


def _compile(plan: Plan) -> Mapper:
    """The plan as one straight-line function, as dataclasses and attrs make theirs.

    A loop over the plan cost about 0.3 µs per column (the step's unpacking, the call);
    the function reads each column once and takes the common case inline: the
    condition and expression of :data:`FAST` for the column's converter, which give
    exactly what the converter gives for those values.  Every other value (NULL, absent,
    another type, the unavailable placeholder, wrong) goes to the converter through
    :func:`_slow`, so the converters stay the one statement of the rules.  The source is
    made from this module's constants only, never from input."""
    env: dict[str, Any] = {
        "MISSING": MISSING, "_U": UNAVAILABLE, "EPOCH": EPOCH, "timedelta": timedelta,
        "_json_string": _json_string, "_key": _key, "_fail": _fail, "_slow": _slow,
        "_not_a_mapping": _not_a_mapping, "_NO": _NO_COLUMNS, "frozenset": frozenset,
    }  # fmt: skip
    fast_id = FAST[text][0].format(v="row_id")
    lines = [
        "def mapper(row):",
        "    try:",
        "        get = row.get",
        "    except AttributeError:",
        "        raise _not_a_mapping(row) from None",
        "    row_id = get('id', MISSING)",
        f"    o0 = row_id if {fast_id} else _key(row_id)",
        "    un = None",
    ]
    out = [f"_d{i}" for i in range(len(TARGET_COLUMNS))]
    out[0] = "o0"
    for step, (column, index, convert, if_null, placeholder) in enumerate(plan):
        env.update({f"_c{step}": convert, f"_n{step}": if_null, f"_p{step}": placeholder})
        out[index] = o = f"o{index}"
        null = (
            f"raise _fail({column!r}, row_id, 'is NULL but the column is NOT NULL')"
            if if_null is MISSING
            else f"{o} = _n{step}"
        )
        slow = f"_slow(_c{step}, v, {column!r}, row_id, _p{step}, {TARGET_COLUMNS[index]!r}, un)"
        lines.append(f"    v = get({column!r}, MISSING)")
        if convert in FAST:
            condition, value = (part.format(v="v") for part in FAST[convert])
            lines += [f"    if {condition}:", f"        {o} = {value}", "    elif v is None:"]
        else:
            lines.append("    if v is None:")
        lines += [f"        {null}", "    else:", f"        {o}, un = {slow}"]
    env.update({name: _TEMPLATE[int(name[2:])] for name in out if name.startswith("_d")})
    lines.append(f"    return ({', '.join(out)}), (frozenset(un) if un else _NO)")
    source = "\n".join(lines) + "\n"
    filename = f"<mapping plan {id(plan):x}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), env)  # made from the constants above, never input
    mapper: Mapper = env["mapper"]
    return mapper


@functools.lru_cache(maxsize=8)
def _mapper_for(cost: CostColumn) -> Mapper:
    """The plan's mapper with ``total_cost`` checked against ``cost``."""
    if cost == PLAN_COST:
        return _PLAN_MAPPER
    converter = cost_converter(cost)
    return _compile(
        tuple(
            (*step[:2], converter, *step[3:]) if step[0] == "total_cost" else step for step in _PLAN
        )
    )


_PLAN_MAPPER = _compile(_PLAN)


# --------------------------------------------------------------------------- public API


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
    return _mapper_for(cost)(row)
