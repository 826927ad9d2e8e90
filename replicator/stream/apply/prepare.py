"""What must be ready before a consumer reads anything: the target's schema (created when
missing), its ``total_cost`` type, and the dead-letter topic; retried while the target
or the broker is down, so a consumer started before them simply waits.  And whether
there is anything to read at all: after a cutover the stream is closed, and the consumer
learns it here, before it joins the group or touches the broker."""

from __future__ import annotations

import logging
import threading
import time

from replicator.errors import CutOver, TransientError
from replicator.mapping.columns import CostColumn
from replicator.observe.metrics import Health
from replicator.stream.apply.deadletter import DeadLetters
from replicator.stream.apply.sink import PostgresSink

log = logging.getLogger("replicator.consumer")


def prepare(
    sink: PostgresSink,
    control: PostgresSink,
    dead_letters: DeadLetters,
    health: Health,
    stop: threading.Event,
    *,
    topic: str,
    backoff_max_s: float,
    give_up_after_s: float | None,
) -> CostColumn | None:
    """The target's ``total_cost`` type once everything is ready; None when asked to stop,
    or after ``give_up_after_s`` before it was.  Raises ``CutOver`` when a cutover closed
    the stream of ``topic`` into the target (checkpoint.py invariant 3)."""
    backoff, started = 0.5, time.monotonic()
    while not stop.is_set():
        try:
            sink.ensure_schema()
            if control.stream_closed(topic):
                raise CutOver(f"the stream of {topic} was closed by a cutover")
            cost = control.cost_column()
            health.target_ok = True
            dead_letters.ensure_topic()
            return cost
        except TransientError as exc:
            if stop.is_set():
                break
            if give_up_after_s is not None and time.monotonic() - started > give_up_after_s:
                log.error("not ready; giving up", extra={"error": str(exc)})
                break
            log.warning("not ready; retrying", extra={"error": str(exc), "backoff_s": backoff})
            stop.wait(backoff)
            backoff = min(backoff * 2, backoff_max_s)
    return None
