"""The long-running replicator: poll -> decode -> transform -> batch -> apply -> checkpoint.

It only composes the stages of ``stream/``.  Invariants (the correctness argument, once):

1. The position of a partition moves only inside the sink's transaction that applies
   the rows its events produced.  A partition's batches are applied by its lane's worker
   thread (lanes.py), strictly in order, while the next batches are decoded; after a
   failed batch the worker discards its queued ones unapplied, and every lane is
   collected before the partitions are re-read.  Kafka's committed offsets are written
   afterwards and are informational only.
2. On assignment, and after any failed apply, a partition is positioned at the offset
   stored in the target database (or the beginning when none is stored).  So every
   event is applied at least once, and a re-applied event is harmless because the
   sink's order guard (source LSN per row) makes applying idempotent and keeps older
   images from overwriting newer rows.
3. An event that cannot be decoded or mapped is dead-lettered, and its delivery is
   confirmed BEFORE the batch holding its position commits (deadletter.py).
4. A target outage discards the in-memory batch, pauses the partitions and retries with
   capped exponential backoff; when the target answers again, the partitions are
   re-positioned from the database and resumed.  Nothing is lost or skipped.
5. Positions are fenced (checkpoint.py): when someone else moved the stored positions,
   the batch rolls back with ``PositionsFenced``, a transient error, and the partitions
   are re-positioned from the database exactly as after an outage.
6. ``replicator cutover`` closes the stored positions (checkpoint.py invariant 3): the
   next batch is fenced, re-positioning or the 10 s watch finds them closed, and so does
   a consumer starting (before it joins the group).  Nothing of the batch in flight
   commits; the consumer leaves the group and idles until a rollback reopens the stream
   (closed.py), or ends with exit 0 under ``exit_when_idle_s``.
7. An applied source TRUNCATE waits for every lane, deletes what is older than it, stores
   its position and raises the table's truncate floor, which every later claim honours
   (truncation.py).
8. The loop never blocks on a busy lane: its batch is held, its partitions paused, polling
   goes on (``_submit``); the sink's timeouts bound every apply, the drain and shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from replicator import errors
from replicator.errors import ReplicatorError, TargetUnavailable, TransientError
from replicator.events import ApplyResult, ChangeEvent
from replicator.observe.metrics import Health, Metrics, served
from replicator.observe.tracker import Tracker
from replicator.settings import Settings
from replicator.stream.apply.batch import Batch
from replicator.stream.apply.checkpoint import PositionFence
from replicator.stream.apply.deadletter import DeadLetteringSink, DeadLetters
from replicator.stream.apply.lanes import Lanes, lane_of
from replicator.stream.apply.prepare import prepare
from replicator.stream.apply.sink import PostgresSink
from replicator.stream.apply.truncation import apply_truncate
from replicator.stream.apply.worker import Finished
from replicator.stream.closed import ClosedStream
from replicator.stream.intake import Intake
from replicator.stream.source.consumer import POLL_MAX, KafkaSource
from replicator.stream.source.decode import Decoder, decoder_for
from replicator.stream.source.positioning import Positioning

log = logging.getLogger("replicator.consumer")

SourceFactory = Callable[[Settings], KafkaSource]


class Replicator:
    """Keeps ``settings.target_table`` equal to the mapped source, from ``settings.topic``."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: SourceFactory = KafkaSource.group_member,
        sink: PostgresSink | Sequence[PostgresSink] | None = None,
        control: PostgresSink | None = None,
        metrics: Metrics | None = None,
        decoder: Decoder | None = None,
        dead_letters: DeadLetters | None = None,
        redriven: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.health = Health(settings.stall_after_s, settings.group_id, settings.topic)
        self.tracker = Tracker(settings, self.metrics, self.health, redriven)
        fence = PositionFence()  # positions move only from where this consumer left them
        if sink is None:  # one per apply lane
            deletes, n = settings.on_delete == "delete", settings.apply_lanes
            sink = [PostgresSink.of(settings, fence, apply_deletes=deletes) for _ in range(n)]
        self.sinks = list(sink) if isinstance(sink, Sequence) else [sink]
        self.sink = self.sinks[0]  # the schema and truncates go through the first
        # positions and pings use their own connection: the sinks' belong to the lanes
        self.control = control or PostgresSink.of(settings, self.sink.fence)
        self.dead_letters = dead_letters or DeadLetters(settings, self.metrics)
        self.appliers = [DeadLetteringSink(s, self.dead_letters) for s in self.sinks]
        self.stop_event = stop = threading.Event()
        self.closed = ClosedStream(settings, self.metrics, self.health, stop)
        self._make_source = source
        self._limits = (settings.batch_max_rows, settings.batch_max_bytes)
        self._fresh()
        self.positioning = Positioning(settings, self.control, self.metrics)
        self.intake = Intake(
            decoder or decoder_for(settings),
            self.tracker,
            self.dead_letters,
            self.positioning,
            self._truncated,
        )

    def _fresh(self) -> None:
        """The state of one pass over the stream (a rollback starts another)."""
        self.source: KafkaSource | None = None
        self._lanes: Lanes[Batch, ApplyResult] | None = None
        self._assigned: set[int] = set()
        self._applied: dict[int, int | None] = {}  # next offset in the target, by partition
        self._unpositioned: set[int] = set()
        self._held: set[int] = set()  # lanes whose full batch waits for their busy worker
        self._batches = self._new_batches()
        self._last_message = time.monotonic()
        self._backlog = False  # the last poll came back full: more is waiting

    def run(self, *, exit_when_idle_s: float | None = None) -> int:
        """Replicate until :attr:`stop_event` is set; return an exit code.

        ``exit_when_idle_s``: return 0 once nothing arrived for that long, or 1 when for
        that long no partition could be assigned (the target, broker or topic is missing).
        A closed stream (invariant 6) returns 0 at once with it; without it the consumer
        stays up idle, and replicates again when a rollback reopens the stream."""
        s = self.settings
        with served(s.metrics_port, self.metrics, self.health, s.metrics_host):
            while True:
                try:
                    cost = prepare(
                        *(self.sink, self.control, self.dead_letters, self.health),
                        self.stop_event,
                        topic=s.topic,
                        backoff_max_s=s.retry_backoff_max_s,
                        give_up_after_s=exit_when_idle_s,
                    )
                    if cost is None:
                        return 0 if self.stop_event.is_set() else 1
                    self.intake.cost = cost
                    return self._run(exit_when_idle_s)
                except errors.CutOver as exc:
                    self._close()
                    if exit_when_idle_s is not None or self.stop_event.is_set():
                        log.info("cut over; exiting", extra={"why": str(exc)})
                        return 0
                if not self.closed.idle():
                    return 0  # stopped while idle
                self._fresh()

    def _run(self, exit_when_idle_s: float | None) -> int:
        self._lanes = Lanes([self._applying(a) for a in self.appliers])
        self.source = source = self._make_source(self.settings)
        source.subscribe(self._on_assign, self._on_revoke, self._on_lost)
        s = self.settings
        where = {"topic": s.topic, "table": s.target_table, "group": s.group_id}
        log.info("replicating", extra={**where, "apply_lanes": len(self.sinks)})
        backoff, exit_code = 0.5, 0
        self._last_message = time.monotonic()
        try:
            while not self.stop_event.is_set():
                try:
                    self._step(source)
                    backoff = 0.5
                except TransientError as exc:
                    self._unavailable(exc, backoff)
                    backoff = min(backoff * 2, self.settings.retry_backoff_max_s)
                except errors.CutOver:
                    self._abandon()  # nothing of it may commit; the revocation drains nothing
                    raise
                self.tracker.progress(self._assigned, group=source.group_state())
                self.tracker.observe(lambda: source.lag(self._applied), self.control.ping)
                if exit_when_idle_s is not None and self._idle_for(exit_when_idle_s):
                    exit_code = 0 if self._assigned else 1
                    break
            try:
                self._drain()
                self.positioning.settle(source)  # a snapshot read whole in this last stretch
            except ReplicatorError as exc:
                log.warning("last batch rolled back", extra={"error": str(exc)})
        finally:
            self._close()
        self.tracker.progress(self._assigned, force=True)
        return exit_code

    def _step(self, source: KafkaSource) -> None:
        """One turn: re-position what waits, poll, hand a due batch over, collect."""
        if self._unpositioned:
            self._reposition()
        self.positioning.watch(source)
        busy = self._pending or (self._lanes is not None and not self._lanes.idle)
        messages = source.poll(0.05 if busy else 0.5)
        if messages:
            self._last_message = time.monotonic()
        self._backlog = len(messages) >= POLL_MAX
        for msg in messages:
            partition = msg.partition()
            if partition in self._unpositioned or partition not in self._assigned:
                continue
            lane = lane_of(partition, len(self._batches))
            self.intake.handle(msg, self._batches[lane])
            if self._batches[lane].full(*self._limits):
                self._submit(lane)
        for lane in range(len(self._batches)):
            if self._batch_due(lane):
                self._submit(lane)
        self._collect()

    @property
    def _pending(self) -> bool:  # events consumed and not handed to a lane yet
        return any(b.events for b in self._batches)

    def _new_batches(self) -> list[Batch]:  # one per lane
        return [Batch(self.settings.topic) for _ in self.sinks]

    def _unavailable(self, exc: TransientError, backoff: float) -> None:
        if isinstance(exc, TargetUnavailable):
            self.tracker.target_down()
        if not self.stop_event.is_set():
            log.warning("unavailable; retrying", extra={"error": str(exc), "backoff_s": backoff})
        self._abandon()
        self._sleep(backoff)

    def _idle_for(self, seconds: float) -> bool:
        """Nothing arrived for ``seconds`` since the partitions were assigned and nothing
        is left to apply; or no partition came within the join's own bound (logged).  The
        idle clock starts at the assignment: joining a group takes seconds on its own."""
        if not self._assigned:  # no message before the assignment
            return self.tracker.join_overdue(time.monotonic() - self._last_message, seconds)
        since = max(self._last_message, self.tracker.assigned_at)  # what to read came after
        if time.monotonic() - since <= seconds or self._pending:
            return False
        if self._lanes is None or not self._lanes.idle or self._unpositioned:
            return False
        log.info("idle; exiting", extra={"idle_s": seconds})
        return True

    def _sleep(self, seconds: float) -> None:
        """Wait, serving group callbacks (paused partitions are re-positioned later)."""
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(TransientError):
                self.source.poll(0.2)  # type: ignore[union-attr]  # a source exists whenever the loop runs

    def _truncated(self, event: ChangeEvent) -> bool:
        """Invariant 7 (False: not applied, ``on_truncate=ignore``)."""
        p = event.position
        where = {"partition": p.partition, "offset": p.offset}
        if self.settings.on_truncate == "ignore":
            log.warning("source TRUNCATE not applied (on_truncate=ignore)", extra=where)
            return False
        self._drain()  # everything read before the truncate first, in every lane
        generation = self.positioning.generations.at(p.partition, p.offset)
        deleted = apply_truncate(self.sink, event, generation, self.positioning.topic_id)
        log.warning("source TRUNCATE applied", extra={**where, "older_rows_deleted": deleted})
        return True

    def _batch_due(self, lane: int) -> bool:
        """Apply at once when the lane is free and nothing more is waiting (latency);
        while the lane is busy, or the last poll came back full (catching up), the batch
        grows until a limit is reached (throughput), so that a backlog does not pay each
        batch's fixed cost (its statements and commit: docs/evidence/performance.md) per few
        hundred events."""
        batch = self._batches[lane]
        if not batch.events or self._lanes is None:
            return False
        started_ms = (time.monotonic() - batch.started) * 1000
        if started_ms >= self.settings.batch_max_ms:
            return True
        return self._lanes.lane_idle(lane) and not self._backlog

    def _submit(self, lane: int, *, wait: bool = False) -> None:
        """Hand a lane's batch to its worker; a lane applies its batches strictly in order.

        Invariant 8: while the worker cannot take it (still applying, another batch
        queued) the batch is held and its lane's partitions paused, and the loop goes on
        polling: a slow or blocked target never keeps the consumer from the group.  With
        ``wait``, block until the worker takes it (bounded: the sink's timeouts)."""
        batch = self._batches[lane]
        if not batch.events:
            return
        assert self._lanes is not None
        if not wait and not self._lanes.accepts(lane):
            if lane not in self._held and self.source is not None:
                self.source.pause(self._lane_partitions(lane))
            self._held.add(lane)
            return
        self._batches[lane] = Batch(self.settings.topic)
        batch.topic_id = self.positioning.topic_id
        self._lanes.submit(lane, batch)
        if lane in self._held and self.source is not None:
            self._held.discard(lane)
            self.source.resume(set(self._lane_partitions(lane)) - self._unpositioned)

    def _lane_partitions(self, lane: int) -> list[int]:
        return sorted(p for p in self._assigned if lane_of(p, len(self._batches)) == lane)

    def _applying(self, applier: DeadLetteringSink) -> Callable[[Batch], ApplyResult]:
        def apply(batch: Batch) -> ApplyResult:
            """On a lane's worker: the batch and its positions in one target transaction
            (invariant 1)."""
            result = applier.apply(batch)
            batch.applied_at = time.time()
            return result

        return apply

    def _collect(self, wait: bool = False) -> None:
        """Account for the batches the lanes applied; raise the first failure."""
        if self._lanes is not None:
            self._lanes.collect(self._account, wait)

    def _account(self, done: Finished[Batch, ApplyResult]) -> None:
        assert done.result is not None
        self.tracker.applied(done.item, done.result, done.seconds)
        self._applied.update(done.item.next_offsets)
        if self.source is not None:
            self.source.commit(done.item.next_offsets)  # informational only (invariant 1)

    def _drain(self) -> None:
        """Apply everything consumed so far and wait for it."""
        for lane in range(len(self._batches)):
            self._submit(lane, wait=True)
        self._collect(wait=True)

    def _on_assign(self, partitions: list[int]) -> Mapping[int, int | None] | None:
        self._assigned |= set(partitions)
        self.tracker.assigned(self._assigned)
        try:
            starts = self.positioning.starts(self.source, partitions)
        except TransientError as exc:
            log.warning("cannot position at assignment; waiting paused", extra={"error": str(exc)})
            self._unpositioned |= set(partitions)
            return None
        self._applied.update(starts)
        log.info("partitions assigned", extra={"positions": starts})
        return starts

    def _on_revoke(self, partitions: list[int]) -> None:
        # Finish the batch in flight while the partitions are still ours; on failure it
        # is abandoned and the remaining partitions re-read from the stored positions.
        try:
            self._drain()
        except ReplicatorError as exc:
            log.warning("batch abandoned at revocation", extra={"error": str(exc)})
            self._abandon()
        self._forget(partitions)
        log.info("partitions revoked", extra={"partitions": sorted(partitions)})

    def _on_lost(self, partitions: list[int]) -> None:
        self._abandon()
        self._forget(partitions)
        log.warning("partitions lost", extra={"partitions": sorted(partitions)})

    def _forget(self, partitions: list[int]) -> None:
        self._applied = {p: o for p, o in self._applied.items() if p not in partitions}
        self._assigned -= set(partitions)
        self._unpositioned -= set(partitions)
        self.tracker.assigned(self._assigned)

    def _abandon(self) -> None:
        """Drop the batch in flight; its partitions re-read from the stored positions."""
        self._batches = self._new_batches()
        self._held.clear()  # their partitions are paused below, resumed when re-positioned
        if self._lanes is not None:
            self._lanes.finished(wait=True)  # whatever was queued: applied or discarded
            self._lanes.reset()
        self.dead_letters.forget()
        if self.source is not None and self._assigned:
            self.source.pause(self._assigned)
            self._unpositioned |= self._assigned

    def _reposition(self) -> None:
        """Seek the waiting partitions to their (checked) stored positions; resume them."""
        assert self.source is not None
        todo = sorted(self._unpositioned & self._assigned)
        starts = self.positioning.starts(self.source, todo)
        self._applied.update(starts)
        for p in todo:
            self.source.seek(p, starts[p])
        self.source.resume(todo)
        self._unpositioned.clear()
        self.tracker.target_back()
        log.info("partitions re-positioned from the target", extra={"partitions": todo})

    def _close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None
        self.dead_letters.close()
        if self._lanes is not None:
            self._lanes.close()
            self._lanes = None
        for sink in self.sinks:
            sink.close()
        self.control.close()
