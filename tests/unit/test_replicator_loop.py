"""The replicator loop, driven through its source seam: no Kafka, no database.

A scripted source hands out Debezium JSON messages of one partition and honours seeks,
pauses and the group callbacks; a recording sink stands for PostgreSQL and stores
positions only inside ``apply``, as the real one does in its transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from replicator.errors import (
    EventError,
    GenerationChanged,
    PositionGap,
    PositionsFenced,
    TargetUnavailable,
)
from replicator.events import ApplyResult, PartitionPosition, RowChange
from replicator.mapping.columns import PLAN_COST, CostColumn
from replicator.settings import Settings
from replicator.stream.apply.generations import Generation
from replicator.stream.replicator import Replicator
from replicator.stream.source.ends import PartitionEnd
from replicator.stream.source.origin import TopicView

TOPIC = "legacy.public.workflow_processes"


class Message:
    def __init__(self, offset: int, run_id: str, cost: float = 1.0) -> None:
        self._offset = offset
        self._key = json.dumps({"id": run_id}).encode()
        after = {
            "id": run_id,
            "workflow_name": "w",
            "message": "m",
            "max_turns": 30,
            "session_name": None,
            "git_branch": None,
            "repository_url": None,
            "created_at": 0,
            "updated_at": 0,
            "status": "running",
            "result": None,
            "error_message": None,
            "execution_time": None,
            "total_cost": cost,
            "started_at": None,
            "completed_at": None,
        }
        source = {"lsn": 1000 + offset, "ts_ms": 1, "snapshot": "false"}
        self._value = json.dumps({"op": "c", "after": after, "source": source}).encode()

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def headers(self) -> list[tuple[str, bytes]]:
        return []


class ScriptedSource:
    """Partition 0 of a topic holding ``messages``; ``on_poll`` runs before each poll."""

    def __init__(self, messages: list[Message], chunk: int = 2) -> None:
        self.messages = messages
        self.chunk = chunk
        self.position = 0
        self.paused = False
        self.assigned = False
        self.log: list[tuple[str, Any]] = []
        self.on_poll: Callable[[ScriptedSource], None] | None = None
        self.callbacks: tuple[Any, Any, Any] | None = None
        self.uuid: str | None = "topic-A"  # the topic's Kafka id
        self.low = 0  # the oldest offset still held

    def topic_id(self) -> str | None:
        return self.uuid

    def describe(self) -> TopicView:
        return TopicView(self.uuid, {0: PartitionEnd(0, self.low, len(self.messages))})

    def group_state(self) -> None:
        return None

    def subscribe(self, on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        self.callbacks = (on_assign, on_revoke, on_lost)

    def poll(self, timeout: float) -> list[Message]:
        assert self.callbacks is not None
        if not self.assigned:
            self.assigned = True
            starts = self.callbacks[0]([0])
            self.paused = starts is None
            self.position = (starts or {}).get(0) or 0
            self.log.append(("assigned", starts))
        if self.on_poll is not None:
            self.on_poll(self)
        if self.paused or not self.assigned:
            return []
        out = self.messages[self.position : self.position + self.chunk]
        self.position += len(out)
        return out

    def seek(self, partition: int, offset: int | None) -> None:
        self.log.append(("seek", offset))
        self.position = offset or 0

    def pause(self, partitions: Any) -> None:
        self.log.append(("pause", sorted(partitions)))
        self.paused = True

    def resume(self, partitions: Any) -> None:
        self.log.append(("resume", sorted(partitions)))
        self.paused = False

    def commit(self, next_offsets: Mapping[int, int]) -> None:
        self.log.append(("commit", dict(next_offsets)))

    def lag(self, applied: Mapping[int, int | None]) -> dict[int, int]:
        return {p: len(self.messages) - (o or 0) for p, o in applied.items()}

    def close(self) -> None:
        self.log.append(("close", None))


class RecordingSink:
    """Stores rows and positions together, in ``apply`` only; fails as told."""

    fence = None

    def __init__(self) -> None:
        self.rows: dict[str, RowChange] = {}
        self.positions: dict[int, int] = {}
        self.topic_ids: dict[int, str | None] = {}
        self.applies: list[tuple[list[str], list[PartitionPosition]]] = []
        self.outages = 0  # applies that fail
        self.load_outages = 0  # position reads that fail
        self.rejects: set[str] = set()
        self.generations: list[Generation] = []
        self.sweeps = 0
        self.floor: dict[str, tuple[int, int]] = {}  # the table's truncate floor, if any

    def load_generations(self, topic: str) -> list[Generation]:
        return list(self.generations)

    def record_recreated(self, topic: str, topic_id: str, partitions: list[int]) -> int | None:
        if any(g.topic_id == topic_id for g in self.generations):
            return None
        number = max((g.number for g in self.generations), default=0) + 1
        self.generations.append(Generation(number, topic_id, {p: 0 for p in partitions}))
        return number

    def sweep(self, topic: str) -> tuple[int, int] | None:
        self.sweeps += 1
        return None

    def ensure_schema(self) -> list[str]:
        return []

    def cost_column(self) -> CostColumn:
        return PLAN_COST

    def load_positions(self, topic: str) -> dict[int, PartitionPosition]:
        if self.load_outages:
            self.load_outages -= 1
            raise TargetUnavailable("down")
        return {
            p: PartitionPosition(topic, p, off, None, self.topic_ids.get(p))
            for p, off in self.positions.items()
        }

    def stream_closed(self, topic: str) -> bool:
        return -1 in self.positions.values()

    def apply(
        self,
        changes: list[RowChange],
        positions: list[PartitionPosition],
        stamped: tuple[str, int] | None = None,
        then: Callable[[Any, ApplyResult], None] | None = None,
        fenced: list[PartitionPosition] | None = None,
    ) -> ApplyResult:
        if self.stream_closed("t"):  # the compare-and-set of a closed position fails
            raise PositionsFenced("closed by a cutover")
        newest = max((g.number for g in self.generations), default=0)
        if stamped is not None and stamped[1] != newest:
            raise GenerationChanged(f"generation {newest} recorded")
        if self.outages:
            self.outages -= 1
            raise TargetUnavailable("the target went away")
        bad = [c.run_id for c in changes if c.run_id in self.rejects]
        if bad:
            raise EventError(f"{bad[0]} rejected", reason="target_rejected")
        floor = self.floor.get("table")
        kept = [
            c for c in changes if floor is None or c.lsn is None or (c.generation, c.lsn) >= floor
        ]
        result = ApplyResult(len(kept), 0, 0, (), len(changes) - len(kept))
        changes = kept
        if then is not None:
            then(None, result)
        self.applies.append(([c.run_id for c in changes], list(positions)))
        for change in changes:
            self.rows[change.run_id] = change
        for p in positions:
            self.positions[p.partition] = p.next_offset
            self.topic_ids[p.partition] = p.topic_id
        return result

    def ping(self) -> None:
        pass

    def truncate(self, generation: int, lsn: int, positions: list[PartitionPosition]) -> int:
        raise AssertionError("not in these tests")

    def close(self) -> None:
        pass


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []
        self.confirmed = 0

    def ensure_topic(self) -> None:
        pass

    def send(self, msg: Any, reason: str, error: str) -> None:
        self.sent.append((msg.offset(), reason))

    def confirm(self, timeout: float = 30) -> None:
        self.confirmed = len(self.sent)

    def forget(self) -> None:
        pass

    def close(self) -> None:
        pass


def replicate(
    source: ScriptedSource,
    sink: RecordingSink,
    dead_letters: RecordingDeadLetters | None = None,
    **settings: Any,
) -> Replicator:
    values: dict[str, Any] = {
        "target_dsn": "postgresql://app@db.invalid/t",
        "kafka_bootstrap": "k.invalid:9092",
        "retry_backoff_max_s": 0.1,
        "batch_max_rows": 3,
        **settings,
    }
    replicator = Replicator(
        Settings(**values),
        source=lambda _settings: source,  # type: ignore[arg-type,return-value]
        sink=sink,  # type: ignore[arg-type]
        control=sink,  # type: ignore[arg-type]
        dead_letters=dead_letters or RecordingDeadLetters(),  # type: ignore[arg-type]
    )
    assert replicator.run(exit_when_idle_s=0.3) == 0
    return replicator


def watching(source: ScriptedSource, sink: RecordingSink) -> Replicator:
    """A replicator that checks its topic and positions every 50 ms (run it yourself)."""
    values = {"target_dsn": "postgresql://app@db.invalid/t", "kafka_bootstrap": "k.invalid:9092"}
    replicator = Replicator(
        Settings(**values, retry_backoff_max_s=0.1, batch_max_rows=3),
        source=lambda _settings: source,  # type: ignore[arg-type,return-value]
        sink=sink,  # type: ignore[arg-type]
        control=sink,  # type: ignore[arg-type]
        dead_letters=RecordingDeadLetters(),  # type: ignore[arg-type]
    )
    replicator.positioning.watch_every_s = 0.05
    return replicator


def test_positions_carry_the_id_of_the_topic_they_belong_to() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(4)])
    sink = RecordingSink()
    replicate(source, sink)
    assert sink.topic_ids == {0: "topic-A"}
    assert all(p.topic_id == "topic-A" for _, positions in sink.applies for p in positions)


def test_joining_the_group_is_not_idle_time() -> None:
    class SlowJoin(ScriptedSource):
        def poll(self, timeout: float) -> list[Message]:
            if self.assigned:
                return super().poll(timeout)
            time.sleep(0.6)  # the group join, longer than exit_when_idle_s: nothing read yet
            self.chunk, chunk = 0, self.chunk
            super().poll(timeout)
            self.chunk = chunk
            return []

    source = SlowJoin([Message(n, f"wp-{n}") for n in range(4)])
    sink = RecordingSink()
    replicate(source, sink)
    assert sorted(sink.rows) == [f"wp-{n}" for n in range(4)]


def test_events_carry_the_snapshot_generation_of_their_place_in_the_topic() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(6)])
    sink = RecordingSink()
    sink.generations = [Generation(1, "topic-A", {0: 2}), Generation(2, "topic-A", {0: 4})]
    replicator = replicate(source, sink)
    assert {r: c.generation for r, c in sink.rows.items()} == {
        "wp-0": 0, "wp-1": 0, "wp-2": 1, "wp-3": 1, "wp-4": 2, "wp-5": 2,
    }  # fmt: skip
    assert sink.sweeps >= 1 and replicator.positioning.generations.latest == 2


def test_a_generation_recorded_while_streaming_rolls_the_batch_back_and_restamps_it() -> None:
    # the connector was re-created at offset 2 after the consumer loaded the generations
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(4)], chunk=4)
    sink = RecordingSink()

    def record_generation(src: ScriptedSource) -> None:
        if src.assigned and not sink.generations:
            sink.generations = [Generation(1, "topic-A", {0: 2})]

    source.on_poll = record_generation
    replicate(source, sink)
    assert {r: c.generation for r, c in sink.rows.items()} == {
        "wp-0": 0, "wp-1": 0, "wp-2": 1, "wp-3": 1,
    }  # fmt: skip
    assert ("seek", None) in source.log  # the stamped batch was re-read, not applied


def test_a_generation_of_an_older_topic_covers_the_whole_of_a_newer_one() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(2)])
    sink = RecordingSink()
    sink.generations = [Generation(3, "topic-old", {0: 900})]
    replicate(source, sink)
    assert {c.generation for c in sink.rows.values()} == {3}


def test_a_position_stored_for_a_re_created_topic_is_set_aside_and_the_log_read_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the broker restarted empty; the new log already holds more than the old position.
    # What the old topic held past the position is gone: the new topic is a generation of
    # its own (its snapshot wins over older changes), and the operator is told.
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(6)])
    sink = RecordingSink()
    sink.positions, sink.topic_ids = {0: 4}, {0: "topic-old"}
    sink.generations = [Generation(2, "topic-old", {0: 1}, {0: 3})]
    with caplog.at_level(logging.ERROR):
        replicator = replicate(source, sink)
    assert source.log[0] == ("assigned", {0: None})  # from the beginning, not from 4
    assert sorted(sink.rows) == [f"wp-{n}" for n in range(6)]
    assert sink.positions == {0: 6} and sink.topic_ids == {0: "topic-A"}
    reset = replicator.metrics.positions_reset.labels("topic_recreated")._value.get()
    assert reset == 1
    assert sink.generations[-1] == Generation(3, "topic-A", {0: 0})  # no marks: unfinished
    assert {c.generation for c in sink.rows.values()} == {3}
    said = [r for r in caplog.records if "re-created under the stored positions" in r.getMessage()]
    assert len(said) == 1 and "--resnapshot" in said[0].getMessage()


def test_a_generation_recorded_for_the_new_topic_already_is_not_recorded_again() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(3)])
    sink = RecordingSink()
    sink.positions, sink.topic_ids = {0: 2}, {0: "topic-old"}
    sink.generations = [Generation(1, "topic-A", {0: 0})]  # another member's, or a resnapshot
    replicate(source, sink)
    assert sink.generations == [Generation(1, "topic-A", {0: 0})]
    assert {c.generation for c in sink.rows.values()} == {1}


def test_a_position_beyond_the_end_is_never_used_even_without_a_topic_id() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(3)])
    source.uuid = None  # a broker that does not tell topic ids
    sink = RecordingSink()
    sink.positions = {0: 9}  # stored by a version that did not record ids
    replicator = replicate(source, sink)
    assert source.log[0] == ("assigned", {0: None})
    assert sorted(sink.rows) == ["wp-0", "wp-1", "wp-2"]
    assert replicator.metrics.positions_reset.labels("beyond_end")._value.get() == 1


def test_a_topic_re_created_under_a_running_consumer_is_read_again_from_its_start() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(4)])
    sink = RecordingSink()
    fresh = [Message(n, f"wp-new-{n}") for n in range(6)]

    def recreate(src: ScriptedSource) -> None:
        if src.position == 4 and src.uuid == "topic-A":
            src.uuid, src.messages = "topic-B", fresh  # same offsets, other events
            src.position = 4  # where the old consumer's fetch position stood

    source.on_poll = recreate
    replicator = watching(source, sink)
    assert replicator.run(exit_when_idle_s=0.5) == 0
    assert ("seek", None) in source.log
    assert {f"wp-new-{n}" for n in range(6)} <= set(sink.rows)  # none of 0..3 skipped
    assert sink.positions == {0: 6} and sink.topic_ids == {0: "topic-B"}


def test_a_consumer_started_after_the_cutover_ends_cleanly_without_applying() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(4)])
    sink = RecordingSink()
    sink.positions = {0: -1}  # closed by replicator cutover
    replicate(source, sink)  # run --exit-when-idle: ends (test_closed_stream.py: run idles)
    assert sink.applies == [] and sink.positions == {0: -1}
    assert source.callbacks is None  # at once: it never joined the group


def test_a_running_consumer_ends_cleanly_when_the_cutover_closes_its_stream() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(12)])
    sink = RecordingSink()

    def cut_over(src: ScriptedSource) -> None:
        if src.position == 6:
            sink.positions = {0: -1}

    source.on_poll = cut_over
    replicator = watching(source, sink)
    assert replicator.run(exit_when_idle_s=30) == 0  # ended by the cutover, not by idling
    assert sink.positions == {0: -1}
    assert "wp-11" not in sink.rows  # nothing applied after the close


def test_a_position_below_the_oldest_held_offset_stops_the_replicator() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(8)])
    source.low = 5  # retention removed offsets 0..4
    sink = RecordingSink()
    sink.positions, sink.topic_ids = {0: 2}, {0: "topic-A"}
    with pytest.raises(PositionGap, match=r"offsets 2\.\.4 are gone.*verify --repair"):
        replicate(source, sink)
    assert sink.applies == []  # nothing past the gap was applied


def test_an_accepted_gap_starts_at_the_oldest_held_offset() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(8)])
    source.low = 5
    sink = RecordingSink()
    sink.positions, sink.topic_ids = {0: 2}, {0: "topic-A"}
    replicator = replicate(source, sink, accept_gap=True)
    assert source.log[0] == ("assigned", {0: 5})
    assert sorted(sink.rows) == ["wp-5", "wp-6", "wp-7"]
    assert replicator.metrics.positions_reset.labels("gap_accepted")._value.get() == 1


def test_positions_are_stored_only_with_the_rows_they_produced() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(7)])
    sink = RecordingSink()
    replicate(source, sink)
    assert sorted(sink.rows) == [f"wp-{n}" for n in range(7)]
    assert sink.positions == {0: 7}
    applied: list[str] = []
    for run_ids, positions in sink.applies:
        applied += run_ids
        # a batch's positions cover exactly the events whose rows it carries
        assert [p.next_offset for p in positions] == [len(applied)]
    commits = [entry for entry in source.log if entry[0] == "commit"]
    assert commits[-1] == ("commit", {0: 7})  # Kafka's offsets only after the database's


def test_a_failed_apply_backs_off_and_rereads_from_the_stored_positions() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(6)])
    sink = RecordingSink()
    sink.positions = {0: 2}  # rows 0 and 1 were applied by an earlier run
    sink.outages = 1
    replicator = replicate(source, sink)
    assert source.log[0] == ("assigned", {0: 2})
    events = [name for name, _ in source.log if name != "commit"]
    assert events[1:4] == ["pause", "seek", "resume"]  # after the backoff, not before
    assert ("seek", 2) in source.log  # the stored position, not where the source was
    assert sorted(sink.rows) == [f"wp-{n}" for n in range(2, 6)]
    assert sink.positions == {0: 6}
    assert replicator.metrics.target_up._value.get() == 1


def test_a_target_down_at_assignment_keeps_the_partition_paused_until_it_answers() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(3)])
    sink = RecordingSink()
    sink.load_outages = 1  # the positions cannot be read at the assignment
    replicate(source, sink)
    assert source.log[0] == ("assigned", None)
    assert ("seek", None) in source.log  # nothing stored: from the beginning
    assert sink.positions == {0: 3} and len(sink.rows) == 3


def test_a_revoke_in_the_middle_of_a_batch_applies_it_before_the_partition_goes() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(5)], chunk=2)
    sink = RecordingSink()
    seen_at_revoke: list[dict[int, int]] = []

    def rebalance_after_two(src: ScriptedSource) -> None:
        if src.position == 2 and src.callbacks is not None:
            src.on_poll = None
            src.callbacks[1]([0])  # the group takes partition 0 away ...
            seen_at_revoke.append(dict(sink.positions))
            src.assigned = False  # ... and hands it out again at the next poll

    source.on_poll = rebalance_after_two
    replicate(source, sink, batch_max_rows=100, batch_max_ms=60_000)
    # the two events consumed before the revoke were applied, their positions with them
    assert seen_at_revoke == [{0: 2}]
    assert [entry for entry in source.log if entry[0] == "assigned"] == [
        ("assigned", {0: None}),
        ("assigned", {0: 2}),  # the new owner starts where the batch left it
    ]
    assert sorted(sink.rows) == [f"wp-{n}" for n in range(5)] and sink.positions == {0: 5}


def test_a_rejected_row_is_isolated_and_dead_lettered_and_the_rest_applied() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(4)], chunk=4)
    sink = RecordingSink()
    sink.rejects = {"wp-2"}
    dead = RecordingDeadLetters()
    replicate(source, sink, dead, batch_max_rows=4)
    assert dead.sent == [(2, "target_rejected")]
    assert dead.confirmed == 1
    assert sorted(sink.rows) == ["wp-0", "wp-1", "wp-3"]
    # the positions are stored last, alone, once the dead letter is confirmed
    assert sink.applies[-1] == ([], [PartitionPosition(TOPIC, 0, 4, 1003, "topic-A")])


@pytest.mark.parametrize("value", [b"not json", b'{"op": "x"}'])
def test_an_undecodable_event_is_dead_lettered_and_passed(value: bytes) -> None:
    bad = Message(1, "wp-1")
    bad._value = value
    source = ScriptedSource([Message(0, "wp-0"), bad, Message(2, "wp-2")], chunk=3)
    sink = RecordingSink()
    dead = RecordingDeadLetters()
    replicate(source, sink, dead)
    assert [offset for offset, _ in dead.sent] == [1]
    assert sorted(sink.rows) == ["wp-0", "wp-2"] and sink.positions == {0: 3}


def test_a_column_added_to_the_source_is_ignored_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = [Message(n, f"wp-{n}") for n in range(4)]
    for msg in messages[1:]:  # the application team added a column after the first event
        doc = json.loads(msg.value())
        doc["after"]["owner_team"] = "payments"
        msg._value = json.dumps(doc).encode()
    sink = RecordingSink()
    replicator = replicate(ScriptedSource(messages), sink)
    assert sorted(sink.rows) == [f"wp-{n}" for n in range(4)]  # the stream flows
    counted = replicator.metrics.unmapped_columns.labels("owner_team")._value.get()
    assert counted == 3
    lines = [r for r in caplog.records if "mapping does not read" in r.getMessage()]
    assert len(lines) == 1 and lines[0].column == "owner_team"  # type: ignore[attr-defined]


def test_an_event_lacking_a_mapped_column_is_dead_lettered_as_a_schema_mismatch() -> None:
    messages = [Message(n, f"wp-{n}") for n in range(3)]
    doc = json.loads(messages[1].value())
    del doc["after"]["total_cost"]  # dropped or renamed in the source
    messages[1]._value = json.dumps(doc).encode()
    sink, dead = RecordingSink(), RecordingDeadLetters()
    replicate(ScriptedSource(messages), sink, dead)
    assert dead.sent == [(1, "schema_mismatch")]
    assert sorted(sink.rows) == ["wp-0", "wp-2"]  # never a NULL in its place


def test_every_consumed_event_is_counted_by_op_and_every_applied_one_in_the_lag_histogram() -> None:
    source = ScriptedSource([Message(n, f"wp-{n}") for n in range(7)])
    sink = RecordingSink()
    replicator = replicate(source, sink)
    registry = replicator.metrics.registry
    consumed = sum(
        registry.get_sample_value("replicator_events_consumed_total", {"op": op}) or 0
        for op in ("c", "u", "r", "d")
    )
    assert consumed == 7
    assert registry.get_sample_value("replicator_end_to_end_lag_seconds_count") == 7
