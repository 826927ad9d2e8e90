"""The transform stage (pure): a change event -> the sink's :class:`RowChange`.

The order-guard version of each change is decided here:

* a streamed change keeps its source LSN;
* a snapshot read gets :data:`~replicator.events.SNAPSHOT_VERSION`.  Debezium stamps
  snapshot reads with the snapshot's LSN, but a transaction in flight during the
  snapshot can have change LSNs below it and still be streamed afterwards.  Streamed
  changes of one row are ordered by their change LSN (row locks serialise them); a
  snapshot read only fills a row that no streamed change of its generation has
  touched, and never overrides one.  A snapshot taken again is a new generation, which
  wins over every change of the older ones (:mod:`replicator.stream.apply.generations`);
* an incremental snapshot read (``verify --repair``) carries no LSN: Debezium's
  watermarks already de-duplicate it against the stream, so it applies unconditionally.
"""

from __future__ import annotations

from replicator.errors import EventError
from replicator.events import SNAPSHOT_VERSION, ChangeEvent, Op, RowChange
from replicator.mapping.columns import PLAN_COST, CostColumn
from replicator.mapping.rows import map_to_tuple


def to_row_change(
    event: ChangeEvent, cost: CostColumn = PLAN_COST, generation: int = 0
) -> RowChange | None:
    """The sink's view of one event; None for ops that change no row.  ``cost``: the
    target's ``total_cost`` type (:func:`~replicator.mapping.rows.map_to_tuple`);
    ``generation``: the event's snapshot generation
    (:mod:`~replicator.stream.apply.generations`)."""
    if event.op in (Op.CREATE, Op.UPDATE, Op.READ):
        if event.after is None:  # decode guarantees an image; guard for other decoders
            raise EventError(f"{event.op.value} event without an 'after' image")
        values, unavailable = map_to_tuple(event.after, cost)
        lsn = event.lsn
        if event.op is Op.READ:
            lsn = None if event.snapshot == "incremental" else SNAPSHOT_VERSION
        return RowChange(str(values[0]), lsn, False, values, unavailable, generation)
    if event.op is Op.DELETE:
        return RowChange(str(event.key), event.lsn, True, None, frozenset(), generation)
    return None
