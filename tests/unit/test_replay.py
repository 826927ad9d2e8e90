"""replay's and swap's pure parts: caught-up logic, the assign-only consumer, the swap's
names and statements, the position fence's bookkeeping, the progress line."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from replicator.db.names import plain_identifier
from replicator.errors import ConfigurationError, PositionsFenced, TransientError
from replicator.events import PartitionPosition
from replicator.observe.progress import Progress, describe
from replicator.replay.reader import ReplaySource
from replicator.replay.runner import Replay, shadow_name
from replicator.replay.swap import (
    grant_statements,
    old_name,
    plan_swap,
    rename_statements,
    renamed,
)
from replicator.settings import Settings
from replicator.stream.apply.checkpoint import PositionFence
from replicator.stream.source.ends import PartitionEnd, caught_up, describe_lag, lagging

ENDS = {0: PartitionEnd(0, 0, 10), 1: PartitionEnd(1, 0, 0), 2: PartitionEnd(2, 5, 5)}


# --------------------------------------------------------------------------- caught up


def test_caught_up_needs_every_partition_at_its_end() -> None:
    assert caught_up({0: 10}, ENDS)  # 1 and 2 have nothing to read: no position needed
    assert caught_up({0: 11, 1: 0, 2: 5}, ENDS)
    assert not caught_up({0: 9}, ENDS)  # offset 9 unread: hi-1 alone is not enough
    assert not caught_up({}, ENDS)
    assert lagging({0: None}, ENDS) == {0: (None, 10)}
    assert (
        describe_lag({0: (None, 10), 3: (4, 7)})
        == "partition 0 at none of 10, partition 3 at 4 of 7"
    )


def test_a_compacted_partition_counts_from_its_low_offset() -> None:
    ends = {0: PartitionEnd(0, 100, 100)}  # everything below 100 compacted away, nothing left
    assert caught_up({}, ends) and ends[0].events == 0
    assert PartitionEnd(0, 100, 150).events == 50


# --------------------------------------------------------------------------- the reader


class Eof:
    def code(self) -> int:
        return KafkaError._PARTITION_EOF


class Msg:
    def __init__(self, partition: int, offset: int, error: Any = None) -> None:
        self._p, self._o, self._e = partition, offset, error

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def error(self) -> Any:
        return self._e


class FakeConsumer:
    def __init__(self, batches: list[list[Msg]]) -> None:
        self.batches = batches
        self.assigned: list[TopicPartition] = []
        self.seeks: list[TopicPartition] = []
        self.commits = 0
        self.paused: set[int] = set()

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions  # a pause outlives it, as librdkafka's does

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append(tp)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Msg]:
        return self.batches.pop(0) if self.batches else []

    def poll(self, timeout: float = -1) -> Msg | None:
        batch = self.consume()
        if batch:
            self.batches.insert(0, batch[1:])
        return batch[0] if batch else None

    def commit(self, *args: Any, **kwargs: Any) -> None:
        self.commits += 1


def reader(batches: list[list[Msg]]) -> tuple[ReplaySource, FakeConsumer, threading.Event]:
    fake, stop = FakeConsumer(batches), threading.Event()
    ends = {0: PartitionEnd(0, 0, 3), 1: PartitionEnd(1, 0, 0)}
    return ReplaySource(fake, "t", ends, stop.set, Progress(enabled=False)), fake, stop


def no_loss(partitions: list[int]) -> None:
    raise AssertionError("a replay is never revoked")


def test_subscribe_assigns_every_partition_through_on_assign() -> None:
    source, fake, stop = reader([])
    seen: list[list[int]] = []

    def on_assign(partitions: list[int]) -> dict[int, int | None]:
        seen.append(partitions)
        return {0: 2}

    fake.paused = {0, 1}  # paused when they were last lost
    source.subscribe(on_assign, no_loss, no_loss)
    assert not fake.paused  # a position for each: every one fetches
    assert seen == [[0, 1]] and [tp.partition for tp in fake.assigned] == [0, 1]
    assert [tp.offset for tp in fake.assigned] == [2, OFFSET_BEGINNING]
    assert source.read == {0: 2, 1: None} and not stop.is_set()


def test_stops_once_every_partition_is_read_to_its_end() -> None:
    source, _fake, stop = reader([[Msg(0, 0), Msg(0, 1)], [Msg(0, 1, error=Eof())], [Msg(0, 2)]])
    source.subscribe(lambda partitions: {}, no_loss, no_loss)
    assert len(source.poll(1.0)) == 2
    assert source.read[0] == 2 and not stop.is_set()
    assert source.poll(1.0) == []  # end-of-partition events move nothing
    assert source.events == 2 and not stop.is_set()
    assert len(source.poll(1.0)) == 1
    assert stop.is_set() and source.events == 3


def test_a_seek_back_is_read_again_and_nothing_is_committed() -> None:
    source, fake, stop = reader([[Msg(0, 2)], [Msg(0, 1), Msg(0, 2)]])
    source.subscribe(lambda partitions: {}, no_loss, no_loss)
    source.poll(1.0)
    assert stop.is_set()
    stop.clear()
    source.seek(0, 1)  # after an outage: back to the stored position
    assert source.read[0] == 1 and fake.seeks[0].offset == 1
    source.poll(1.0)
    assert stop.is_set()
    source.commit({0: 3})
    assert fake.commits == 0


# --------------------------------------------------------------------------- replay


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "target_dsn": "postgresql://u@h/db",
        "kafka_bootstrap": "h:9092",
        "metrics_port": 9100,
        **overrides,
    }
    return Settings(**values)


def test_replay_tables_and_their_positions() -> None:
    shadow = Replay(settings(), shadow_name("workflow_runs"))
    assert shadow.settings.target_table == "workflow_runs_replay"
    assert shadow.settings.offsets_table == "replicator_offsets"  # handed over by --swap
    assert shadow.settings.metrics_port is None
    live = Replay(settings(), "workflow_runs")
    assert live.settings.offsets_table == "replicator_replay_offsets"  # never the live ones
    with pytest.raises(ConfigurationError):
        plain_identifier('bad"name')


# --------------------------------------------------------------------------- swap


def test_swap_names() -> None:
    assert (
        old_name("workflow_runs", datetime(2025, 1, 2, 3, 4, 5))
        == "workflow_runs_old_20250102030405"
    )
    assert renamed("idx_wr_status", "wr", "wr_old") == "idx_wr_old_status"
    assert renamed("wr_pkey", "wr", "wr_old") == "wr_old_pkey"
    assert renamed("wr_versions_pkey", "wr_versions", "wr_old_versions") == "wr_old_versions_pkey"
    assert renamed("idx_wr_replay_status", "wr_replay", "wr") == "idx_wr_status"
    assert renamed("someone_elses", "wr", "x") is None
    plan = plan_swap("wr", "wr_replay", "wr_old_1")
    assert [t for t, _, _ in plan.tables] == ["wr", "wr_versions"]
    with pytest.raises(ConfigurationError):
        plan_swap("w" * 40, "s", "w" * 40 + "_old_20250102030405")
    with pytest.raises(ConfigurationError):
        plan_swap("wr", "wr", "wr_old")


def test_rename_statements_rename_objects_then_the_table() -> None:
    statements = [
        s.as_string(None)
        for s in rename_statements(
            [
                ("index", "idx_wr_replay_status"),
                ("index", "wr_replay_pkey"),
                ("constraint", "wr_replay_user_id_fkey"),
                ("index", "unrelated"),
            ],
            "wr_replay",
            "wr",
        )
    ]
    assert statements == [
        'ALTER TABLE "wr_replay" RENAME CONSTRAINT "wr_replay_user_id_fkey" TO "wr_user_id_fkey"',
        'ALTER INDEX "idx_wr_replay_status" RENAME TO "idx_wr_status"',
        'ALTER INDEX "wr_replay_pkey" RENAME TO "wr_pkey"',
        'ALTER TABLE "wr_replay" RENAME TO "wr"',
    ]


def test_grant_statements_copy_known_privileges_only() -> None:
    statements = [
        s.as_string(None)
        for s in grant_statements(
            [("replicator_app", "SELECT", False), (None, "INSERT", True), ("x", "DROP", False)],
            "wr_replay",
        )
    ]
    assert statements == [
        'GRANT SELECT ON "wr_replay" TO "replicator_app"',
        'GRANT INSERT ON "wr_replay" TO PUBLIC WITH GRANT OPTION',
    ]


# --------------------------------------------------------------------------- fence, meter


def test_position_fence_bookkeeping() -> None:
    fence = PositionFence()
    assert fence.expected("t", 0) is None
    fence.loaded("t", {0: PartitionPosition("t", 0, 10, None)})
    fence.loaded("u", {0: PartitionPosition("u", 0, 3, None)})
    fence.stored([PartitionPosition("t", 1, 4, None), PartitionPosition("t", 0, 12, None)])
    assert (fence.expected("t", 0), fence.expected("t", 1), fence.expected("u", 0)) == (12, 4, 3)
    fence.loaded("t", {})  # everything of t re-read: nothing stored any more
    assert fence.expected("t", 0) is None and fence.expected("u", 0) == 3
    fence.stored([PartitionPosition("t", 2, 1, None)], replace=True)
    assert (fence.expected("t", 2), fence.expected("u", 0)) == (1, None)
    assert issubclass(PositionsFenced, TransientError)


def test_progress_line() -> None:
    assert describe("replay", 500, 2000, "events", 250.0) == (
        "replay: 500/2,000 events (25%), 250 events/s, ETA 0:00:06"
    )
    assert describe("x", 0, 0, "keys", 0).endswith("0 keys/s, ETA 0:00:00")
