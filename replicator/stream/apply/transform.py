"""The transform stage (pure): a change event -> the sink's :class:`RowChange`.

The version of each change (:mod:`replicator.stream.apply.versions`) is decided here:

* a streamed change keeps its source LSN;
* a snapshot read gets :data:`~replicator.events.SNAPSHOT_VERSION`, whatever it carries.
  Debezium stamps snapshot reads with the snapshot's LSN, but a transaction in flight
  during the snapshot can have change LSNs below it and still be streamed afterwards.
  Streamed changes of one row are ordered by their change LSN (row locks serialise
  them); a snapshot read only fills a row that no streamed change of its generation has
  touched, and never overrides one.  A snapshot taken again is a new generation, which
  wins over every change of the older ones (:mod:`replicator.stream.apply.generations`);
* an incremental snapshot read carries no LSN, and the same in-flight transaction can
  stream after it with an LSN below any it could claim: it is a snapshot read, version
  0 of its generation (the argument: versions.py);
* a row event the pipeline cannot use leaves a :func:`hold` in its place.
"""

from __future__ import annotations

from typing import Any

from replicator.errors import EventError
from replicator.events import SNAPSHOT_VERSION, ChangeEvent, Op, RowChange
from replicator.mapping.calendar import AMBIGUOUS_UNTIL_US, CalendarError, snapshot_micros
from replicator.mapping.columns import PLAN_COST, SOURCE_TYPES, TARGET_COLUMNS, CostColumn
from replicator.mapping.rows import map_to_tuple


def to_row_change(
    event: ChangeEvent, cost: CostColumn = PLAN_COST, generation: int = 0
) -> RowChange | None:
    """The sink's view of one event; None for ops that change no row.  ``cost``: the
    target's ``total_cost`` type (:func:`~replicator.mapping.rows.map_to_tuple`);
    ``generation``: the event's snapshot generation
    (:mod:`~replicator.stream.apply.generations`)."""
    op = event.op
    if op is _UPDATE or op is _CREATE or op is _READ:
        if event.after is None:  # decode guarantees an image; guard for other decoders
            raise EventError(f"{op.value} event without an 'after' image")
        if op is _READ:
            values, unavailable = map_to_tuple(_snapshot_calendar(event.after), cost)
            lsn = SNAPSHOT_VERSION
        else:
            values, unavailable = map_to_tuple(event.after, cost)
            lsn = event.lsn if event.lsn is not None else SNAPSHOT_VERSION
        # positional, and values[0] is the run_id as text (the mapping checked it)
        return RowChange(values[0], lsn, False, values, unavailable, generation)
    if op is _DELETE:
        lsn = event.lsn if event.lsn is not None else SNAPSHOT_VERSION
        return RowChange(str(event.key), lsn, True, None, _NONE, generation)
    return None


# the members, bound once: an Enum attribute costs a lookup per event
_CREATE, _UPDATE, _READ, _DELETE = Op.CREATE, Op.UPDATE, Op.READ, Op.DELETE
_NONE: frozenset[str] = frozenset()
_TIMESTAMPS = tuple(c for c, t in SOURCE_TYPES.items() if t.startswith("timestamp"))
#: Every column but the key: a hold keeps them all as the target has them.
_ALL_KEPT = frozenset(TARGET_COLUMNS[1:])


def _snapshot_calendar(after: Any) -> Any:
    """A snapshot read's image with its timestamps in PostgreSQL's calendar
    (:mod:`~replicator.mapping.calendar`); the image itself when none needs it."""
    fixed = None
    for name in _TIMESTAMPS:
        value = after.get(name)
        if value.__class__ is int and value < AMBIGUOUS_UNTIL_US:
            fixed = fixed if fixed is not None else dict(after)
            try:
                fixed[name] = snapshot_micros(value)
            except CalendarError as exc:
                raise EventError(f"{name}: {exc}", reason="snapshot_timestamp") from None
    return after if fixed is None else fixed


def hold(run_id: str | None, generation: int) -> RowChange | None:
    """What a row event of ``generation`` leaves in its place when it cannot be used (it
    was dead-lettered: undecodable, unmappable, or rejected by the target): a change that
    keeps every column as the target has it and claims ``(generation, 0)``.  The weakest
    version of its generation, writing nothing, it can only move the entry of a row the
    target has out of an older generation, so the generation's sweep keeps the row (the
    event may be its snapshot read: the source has it), while any change of the
    generation still wins.  None when there is nothing to hold: no row known, or the
    first generation (no sweep)."""
    if run_id is None or generation < 1:
        return None
    values = (run_id,) + (None,) * len(_ALL_KEPT)
    return RowChange(run_id, SNAPSHOT_VERSION, False, values, _ALL_KEPT, generation)


def is_hold(change: RowChange) -> bool:
    """``change`` is a :func:`hold` (nothing of it is data to apply)."""
    return change.unavailable == _ALL_KEPT and not change.delete
