"""A consumer whose stream a cutover closed: it stays up, idle, instead of ending.

``replicator run`` is a long-running consumer, and what runs it (a Kubernetes Deployment,
systemd) starts it again whenever it ends: a consumer that ended because there is nothing
left to replicate would be started, end again, and loop (CrashLoopBackOff, the alerts
paging).  So after a cutover it stays up and says what is true, in three places: the log
(once, with what to do), ``/readyz`` (200, ``cut over: ...``; the argument is
:func:`~replicator.observe.metrics.readiness`) and the ``replicator_cut_over`` gauge.

While idle it holds nothing of the stream: it has left the consumer group (no partition,
no Kafka client at all), its dead-letter producer is flushed and closed, and it keeps no
database connection: every ``check_every_s`` it opens a plain one (none of an apply
connection's session set-up) to read whether the stored positions are still closed, and
closes it.

When a rollback reopens the stream (checkpoint.py invariant 3), the consumer resumes in
the same process, exactly as a fresh start would: the schema checked, the group joined,
every partition positioned from the target.  Resuming rather than exiting keeps a
Deployment's pod (no restart to count, no ``ReplicatorDown`` gap) and works the same
wherever the consumer runs: started by hand or by a service manager that does not restart
a process that exited 0, it would otherwise stay stopped after the rollback.
``run --exit-when-idle`` (Jobs, scripts) does not idle: it ends with exit 0 at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from replicator.cutover import guard
from replicator.cutover.objects import Record
from replicator.db.connect import first_line
from replicator.errors import ReplicatorError
from replicator.observe.metrics import Health, Metrics
from replicator.settings import Settings
from replicator.stream.apply.checkpoint import CLOSED, read_positions

log = logging.getLogger("replicator.consumer")


class ClosedStream:
    """The idle state of a consumer whose stream a cutover closed (see the module doc)."""

    def __init__(
        self, settings: Settings, metrics: Metrics, health: Health, stop: threading.Event
    ) -> None:
        self.topic, self.table = settings.topic, settings.target_table
        self._offsets_table = settings.offsets_table
        self._dsn = settings.target_dsn.get_secret_value()
        self._metrics = metrics
        self._health = health
        self._stop = stop
        self.check_every_s = 10.0
        self.still_closed: Callable[[], bool] = self._read_closed  # the stored positions
        self.record: Callable[[], Record | None] = self._read_record  # the cutover, if known

    def idle(self) -> bool:
        """Wait, idle, until a rollback reopens the stream (True: replicate again) or until
        asked to stop (False).  The caller has closed the consumer and its connections."""
        said = self.status()
        self._metrics.cut_over.set(1)
        self._metrics.consumer_lag.clear()  # the stream's gauges: it is not read any more
        self._metrics.slot_lag_bytes.clear()  # (the cutover dropped the slot)
        h = self._health
        h.cut_over, h.lag, h.assigned = said, 0, frozenset()
        log.info("cut over: %s", said, extra={"topic": self.topic, "table": self.table})
        unreadable = False
        while self._wait(self.check_every_s):
            try:
                closed = self.still_closed()
            except ReplicatorError as exc:
                if not unreadable:  # once per outage: nothing depends on it meanwhile
                    log.warning(
                        "cut over: cannot read the stored positions; a rollback is noticed"
                        " once they are readable again",
                        extra={"error": first_line(exc)},
                    )
                unreadable = True
                self._metrics.target_up.set(0)
                continue
            unreadable = False
            self._metrics.target_up.set(1)
            if not closed:
                self._resume()
                return True
        return False

    def status(self) -> str:
        """What is true, and what the operator does: the log line and ``/readyz``."""
        record = self.record()
        closed = f"the stream of {self.topic} into {self.table} was closed by a cutover"
        if record is not None:
            closed += f" at {record.cut_at:%Y-%m-%d %H:%M:%S%z}"
        idle = (
            "; nothing is left to replicate: this consumer stays up idle (no partition, no"
            f" connection held; it reads the positions every {self.check_every_s:g} s)."
        )
        if record is not None and record.state == "finalized":
            return (
                f"{closed} and finalized{idle} The migration is complete: retire this"
                " deployment, its scrape job and its alerts"
            )
        return (
            f"{closed}{idle} Retire its deployment once `replicator cutover --finalize` ends"
            " the rollback window; or `replicator rollback` reopens the stream, and this"
            " consumer resumes replicating by itself"
        )

    def _resume(self) -> None:
        now = time.monotonic()
        h = self._health
        h.cut_over, h.unassigned_since, h.last_progress = None, now, now
        self._metrics.cut_over.set(0)
        log.info(
            "the stream was reopened (`replicator rollback`): replicating again",
            extra={"topic": self.topic, "table": self.table},
        )

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` in short slices (a signal handler setting the stop event is
        seen at once, and never waits on a lock the sleeper holds); False once stopped."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, 0.2))
        return False

    def _read_closed(self) -> bool:
        """The stream is still closed: a closed marker among the stored positions, read on
        a connection opened for this read."""
        stored = read_positions(self._dsn, self._offsets_table, self.table, self.topic)
        return CLOSED in stored.values()

    def _read_record(self) -> Record | None:
        """The cutover that closed this stream, read on a connection of its own (None when
        it cannot be read, or belongs to another target table)."""
        try:
            record = guard.closed_by(self._dsn)
        except ReplicatorError as exc:
            log.debug("cutover record not readable", extra={"error": first_line(exc)})
            return None
        return record if record is not None and record.target_table == self.table else None
