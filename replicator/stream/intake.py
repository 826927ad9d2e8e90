"""One consumed message into its lane's batch: decode -> transform -> batch, or the
dead-letter topic.

Every message moves its partition's position in the batch (``Batch.advance``), whatever
became of it: a tombstone or an op that changes no row is counted and read past; an
event that cannot be decoded or mapped is dead-lettered (replicator.py invariant 3); a
source TRUNCATE is handed to the loop, which applies it in its place (invariant 7).

A row event of a generation taken again (``--resnapshot``) that is dead-lettered leaves
a *hold* in the batch (:func:`~replicator.stream.apply.transform.hold`): the row stays as
the target has it, versioned in the new generation, so the generation's sweep does not
delete a row the source still has because its new image could not be used.  The row is
the event's, or, for bytes that cannot be decoded at all (a writer schema the registry
no longer has), the one its key names (``DecodeError.row_key``): such an event may be
the row's snapshot read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from replicator.errors import DecodeError, EventError
from replicator.events import ChangeEvent, KafkaPosition, Op
from replicator.mapping.columns import PLAN_COST
from replicator.observe.tracker import Tracker
from replicator.stream.apply.batch import Batch
from replicator.stream.apply.deadletter import DeadLetters
from replicator.stream.apply.transform import hold, to_row_change
from replicator.stream.source.decode import Decoder
from replicator.stream.source.positioning import Positioning


class Intake:
    """Turns the messages of the loop into batch entries (module docstring)."""

    def __init__(
        self,
        decode: Decoder,
        tracker: Tracker,
        dead_letters: DeadLetters,
        positioning: Positioning,
        truncated: Callable[[ChangeEvent], bool],
    ) -> None:
        self.decode = decode
        self.tracker = tracker
        self.dead_letters = dead_letters
        self.positioning = positioning
        self.truncated = truncated  # True: the loop applied the truncate
        self.cost = PLAN_COST  # the target's total_cost type, read at start

    def handle(self, msg: Any, batch: Batch) -> None:
        partition, offset = msg.partition(), msg.offset()
        value = msg.value()
        batch.bytes += len(value) if value else 0
        event: ChangeEvent | None = None
        generations = self.positioning.generations
        try:
            event = self.decode(msg.key(), value, KafkaPosition(msg.topic(), partition, offset))
            if event is None:
                self.tracker.skipped("tombstone")
                batch.advance(partition, offset, None)
                return
            self.tracker.consumed(event.op.value)
            if event.op is Op.TRUNCATE and self.truncated(event):
                return
            self.tracker.columns(event.after)
            change = to_row_change(event, self.cost, generations.at(partition, offset))
        except EventError as exc:
            self.dead_letters.send(msg, exc.reason, str(exc))
            batch.dead_letters += 1
            undecoded = exc.row_key if isinstance(exc, DecodeError) else None
            row = event.key if event is not None else undecoded
            held = hold(row, generations.at(partition, offset))
            if held is not None:
                batch.add(held, msg, None, generations.latest)
            batch.advance(partition, offset, None)
            return
        if change is None:
            self.tracker.skipped(event.op.name.lower())
        else:
            batch.add(change, msg, event.source_ts_ms, generations.latest)
        batch.advance(partition, offset, event.lsn)
