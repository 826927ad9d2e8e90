"""Apply lanes: a partition's batches are applied by one lane, in order; a failure in
one lane lets the others finish, and every partition is re-read from its stored position."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from replicator.errors import EventError
from replicator.events import ApplyResult, ChangeEvent, KafkaPosition, Op, PartitionPosition
from replicator.settings import Settings
from replicator.stream.apply.lanes import Lanes, lane_of
from replicator.stream.apply.truncation import apply_truncate
from replicator.stream.apply.worker import Finished
from replicator.stream.replicator import Replicator
from replicator.stream.source.ends import PartitionEnd
from replicator.stream.source.origin import TopicView
from tests.unit.test_replicator_loop import Message, RecordingDeadLetters, RecordingSink


def test_an_item_goes_to_the_lane_of_its_partition_and_each_lane_keeps_its_order() -> None:
    applied: list[tuple[str, tuple[int, int]]] = []
    lock = threading.Lock()

    def lane(name: str) -> Any:
        def apply(item: tuple[int, int]) -> str:
            time.sleep(0.001)
            with lock:
                applied.append((name, item))
            return name

        return apply

    lanes: Lanes[tuple[int, int], str] = Lanes([lane("a"), lane("b")])
    items = [(p, n) for n in range(5) for p in range(4)]  # (partition, sequence)
    for item in items:
        lanes.submit(lane_of(item[0], 2), item)
    done = lanes.finished(wait=True)
    lanes.close()
    assert len(done) == len(items) and lanes.idle
    assert {(name, p % 2) for name, (p, _) in applied} == {("a", 0), ("b", 1)}
    for p in range(4):
        assert [n for _, (q, n) in applied if q == p] == list(range(5))


def test_a_failure_is_raised_once_every_lane_finished_what_it_was_given() -> None:
    release = threading.Event()

    def failing(item: int) -> int:
        if item == 1:
            raise RuntimeError("lane 0 failed")
        return item

    def slow(item: int) -> int:
        release.wait(5)
        return item

    lanes: Lanes[int, int] = Lanes([failing, slow])
    for item in (1, 3):  # lane 0: 3 queued behind the failing 1
        lanes.submit(0, item)
    lanes.submit(1, 10)
    accounted: list[Finished[int, int]] = []
    threading.Timer(0.2, release.set).start()
    with pytest.raises(RuntimeError, match="lane 0 failed"):
        lanes.collect(accounted.append, wait=False)
        while True:  # until the failure is seen
            time.sleep(0.01)
            lanes.collect(accounted.append, wait=False)
    assert release.is_set()  # it waited for lane 1's batch
    assert [d.item for d in accounted] == [10]  # lane 1's batch counts; 3 was discarded
    lanes.submit(0, 4)  # and work is accepted again
    lanes.collect(accounted.append, wait=True)
    lanes.close()
    assert [d.item for d in accounted] == [10, 4]


class PartitionMessage(Message):
    def __init__(self, partition: int, offset: int, run_id: str) -> None:
        super().__init__(offset, run_id)
        self._partition = partition

    def partition(self) -> int:
        return self._partition


class TwoPartitions:
    """Partitions 0 and 1 of a topic; honours seeks, pauses and the assignment callback."""

    def __init__(self, rows: int) -> None:
        self.messages = {
            p: [PartitionMessage(p, n, f"wp-{p}-{n}") for n in range(rows)] for p in (0, 1)
        }
        self.position = {0: 0, 1: 0}
        self.paused: set[int] = set()
        self.callbacks: tuple[Any, Any, Any] | None = None
        self.log: list[tuple[str, Any]] = []

    def topic_id(self) -> str | None:
        return "topic-A"

    def describe(self) -> TopicView:
        ends = {p: PartitionEnd(p, 0, len(m)) for p, m in self.messages.items()}
        return TopicView("topic-A", ends)

    def group_state(self) -> None:
        return None

    def subscribe(self, on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        self.callbacks = (on_assign, on_revoke, on_lost)

    def poll(self, timeout: float) -> list[PartitionMessage]:
        assert self.callbacks is not None
        if not self.log:
            starts = self.callbacks[0]([0, 1])
            self.log.append(("assigned", starts))
            for p, offset in (starts or {}).items():
                self.position[p] = offset or 0
        out: list[PartitionMessage] = []
        for p, messages in self.messages.items():
            if p not in self.paused:
                out += messages[self.position[p] : self.position[p] + 2]
                self.position[p] += len(messages[self.position[p] : self.position[p] + 2])
        return out

    def seek(self, partition: int, offset: int | None) -> None:
        self.log.append(("seek", (partition, offset)))
        self.position[partition] = offset or 0

    def pause(self, partitions: Any) -> None:
        self.paused |= set(partitions)

    def resume(self, partitions: Any) -> None:
        self.paused -= set(partitions)

    def commit(self, next_offsets: Mapping[int, int]) -> None:
        pass

    def lag(self, applied: Mapping[int, int | None]) -> dict[int, int]:
        return {}

    def close(self) -> None:
        pass


def lanes_of(shared: RecordingSink) -> list[RecordingSink]:
    """Two sinks writing one table (the rows and positions of ``shared``)."""
    sinks = [RecordingSink(), RecordingSink()]
    for sink in sinks:
        sink.rows, sink.positions, sink.topic_ids = shared.rows, shared.positions, shared.topic_ids
        sink.floor = shared.floor
    return sinks


def replicate_in_lanes(
    source: TwoPartitions, shared: RecordingSink, sinks: list[RecordingSink], **settings: Any
) -> None:
    settings = Settings(
        target_dsn="postgresql://app@db.invalid/t",
        kafka_bootstrap="k.invalid:9092",
        retry_backoff_max_s=0.1,
        batch_max_rows=3,
        **settings,
    )
    replicator = Replicator(
        settings,
        source=lambda _settings: source,  # type: ignore[arg-type,return-value]
        sink=sinks,  # type: ignore[arg-type]
        control=shared,  # type: ignore[arg-type]
        dead_letters=RecordingDeadLetters(),  # type: ignore[arg-type]
    )
    assert replicator.run(exit_when_idle_s=0.3) == 0


def test_each_partition_is_applied_by_its_own_lane_in_log_order() -> None:
    shared = RecordingSink()
    sinks = lanes_of(shared)
    replicate_in_lanes(TwoPartitions(7), shared, sinks)
    assert sorted(shared.rows) == sorted(f"wp-{p}-{n}" for p in (0, 1) for n in range(7))
    assert shared.positions == {0: 7, 1: 7}
    for lane, sink in enumerate(sinks):
        stored = [p for _, positions in sink.applies for p in positions]
        assert stored and {p.partition for p in stored} == {lane}
        offsets = [p.next_offset for p in stored]
        assert offsets == sorted(offsets)  # a lane's positions only move forward
        rows = [run_id for run_ids, _ in sink.applies for run_id in run_ids]
        assert rows == [f"wp-{lane}-{n}" for n in range(7)]


def test_a_failure_in_one_lane_re_reads_every_partition_from_its_stored_position() -> None:
    shared = RecordingSink()
    sinks = lanes_of(shared)
    sinks[1].outages = 1  # the first batch of partition 1 fails
    source = TwoPartitions(7)
    replicate_in_lanes(source, shared, sinks)
    assert sorted(shared.rows) == sorted(f"wp-{p}-{n}" for p in (0, 1) for n in range(7))
    assert shared.positions == {0: 7, 1: 7}
    seeks = [where for name, where in source.log if name == "seek"]
    assert {p for p, _ in seeks} == {0, 1}  # both partitions, from their stored positions
    assert (1, None) in seeks  # nothing of partition 1 was stored before its failure


class Truncate(PartitionMessage):
    def __init__(self, partition: int, offset: int) -> None:
        super().__init__(partition, offset, "unused")
        source = {"lsn": 5000 + offset, "ts_ms": 1, "snapshot": "false"}
        self._key = None  # type: ignore[assignment]
        self._value = json.dumps({"op": "t", "source": source}).encode()


class MadeAt(PartitionMessage):
    """An insert made at source LSN ``lsn``."""

    def __init__(self, partition: int, offset: int, run_id: str, lsn: int) -> None:
        super().__init__(partition, offset, run_id)
        event = json.loads(self._value)
        event["source"]["lsn"] = lsn
        self._value = json.dumps(event).encode()


def truncating(shared: RecordingSink, calls: list[tuple[Any, ...]]) -> Any:
    """A sink's truncate over ``shared``: the rows older than the truncate go, the
    positions given are stored beside the others, the floor rises to it."""

    def truncate(generation: int, lsn: int, positions: list[PartitionPosition]) -> int:
        calls.append((sorted(shared.rows), generation, lsn, positions))
        older = [r for r, c in shared.rows.items() if (c.generation, c.lsn) < (generation, lsn)]
        for run_id in older:
            del shared.rows[run_id]
        shared.positions.update({p.partition: p.next_offset for p in positions})
        shared.floor["table"] = max(shared.floor.get("table", (0, 0)), (generation, lsn))
        return len(older)

    return truncate


def test_an_applied_truncate_waits_for_every_lane_then_drops_what_is_older() -> None:
    shared = RecordingSink()
    calls: list[tuple[Any, ...]] = []
    sinks = lanes_of(shared)
    sinks[0].truncate = truncating(shared, calls)  # type: ignore[method-assign]
    source = TwoPartitions(3)  # inserts at LSNs 1000-1002 in both partitions
    source.messages[0].append(Truncate(0, 3))  # at LSN 5003
    source.messages[1].append(MadeAt(1, 3, "wp-1-before", 4000))
    source.messages[1].append(MadeAt(1, 4, "wp-1-after", 6000))
    replicate_in_lanes(source, shared, sinks, on_truncate="apply")
    # read two per partition per poll: 0-0 0-1 1-0 1-1, then 0-2, the truncate, 1-2,
    # 1-before, then 1-after
    ((before, generation, lsn, positions),) = calls
    assert before == ["wp-0-0", "wp-0-1", "wp-0-2", "wp-1-0", "wp-1-1"]  # both lanes' first
    assert (generation, lsn) == (0, 5003)
    assert [(p.partition, p.next_offset, p.last_lsn) for p in positions] == [(0, 4, 5003)]
    # read after the truncate but made before it: dropped; made after it: applied
    assert sorted(shared.rows) == ["wp-1-after"]
    assert shared.positions == {0: 4, 1: 5}  # partition 1's position was kept and moved on


def test_a_truncate_takes_its_place_by_its_lsn_and_stores_only_its_own_position() -> None:
    applied: list[tuple[int, int, list[PartitionPosition]]] = []

    class Sink:
        def truncate(self, generation: int, lsn: int, positions: list[PartitionPosition]) -> int:
            applied.append((generation, lsn, positions))
            return 3

    def truncate(lsn: int | None, offset: int = 7) -> ChangeEvent:
        return ChangeEvent(
            Op.TRUNCATE, None, None, None, lsn, 1, "false", KafkaPosition("t", 2, offset)
        )

    with pytest.raises(EventError, match="without a source LSN"):
        apply_truncate(Sink(), truncate(None), 0, "topic-A")
    assert applied == []
    assert apply_truncate(Sink(), truncate(5000), 1, "topic-A") == 3
    assert applied == [(1, 5000, [PartitionPosition("t", 2, 8, 5000, "topic-A")])]


def test_an_ignored_truncate_keeps_every_row_and_is_read_past() -> None:
    shared = RecordingSink()
    sinks = lanes_of(shared)
    sinks[0].truncate = None  # type: ignore[assignment,method-assign]  # never called
    source = TwoPartitions(2)
    source.messages[0].append(Truncate(0, 2))
    source.messages[1].append(MadeAt(1, 2, "wp-1-before", 4000))  # older than the truncate
    replicate_in_lanes(source, shared, sinks)  # on_truncate: ignore, the default
    assert sorted(shared.rows) == ["wp-0-0", "wp-0-1", "wp-1-0", "wp-1-1", "wp-1-before"]
    assert shared.positions == {0: 3, 1: 3}


class RecordedPolls(TwoPartitions):
    """Records when each poll happened and which partitions were paused then."""

    def __init__(self, rows: int) -> None:
        super().__init__(rows)
        self.polls: list[tuple[float, frozenset[int]]] = []

    def poll(self, timeout: float) -> list[PartitionMessage]:
        self.polls.append((time.monotonic(), frozenset(self.paused)))
        return super().poll(timeout)


def test_a_stuck_lane_pauses_its_partitions_while_the_loop_keeps_polling() -> None:
    """A lane waiting on a lock must not stop the main thread: it keeps polling (the group
    keeps the consumer) with the stuck lane's partitions paused, then goes on."""
    shared = RecordingSink()
    sinks = lanes_of(shared)
    stuck, released = threading.Event(), []
    original = sinks[1].apply

    def blocked(*args: Any, **kwargs: Any) -> ApplyResult:
        stuck.wait(10)
        return original(*args, **kwargs)

    def release() -> None:
        released.append(time.monotonic())
        stuck.set()

    sinks[1].apply = blocked  # type: ignore[method-assign]
    source = RecordedPolls(20)
    timer = threading.Timer(1.5, release)
    timer.start()
    replicate_in_lanes(source, shared, sinks)
    timer.join()
    while_stuck = [paused for at, paused in source.polls if at < released[0]]
    assert len(while_stuck) >= 10  # polled on and on, never blocked in a hand-over
    assert any(paused == {1} for paused in while_stuck)  # only the stuck lane's partition
    assert not source.paused  # resumed once its lane took the batch
    assert sorted(shared.rows) == sorted(f"wp-{p}-{n}" for p in (0, 1) for n in range(20))
    assert shared.positions == {0: 20, 1: 20}
