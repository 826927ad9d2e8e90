"""replay's and swap's pure parts: caught-up logic, the assign-only consumer, the swap's
names and statements, the position fence's bookkeeping, the progress line."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from replicator.errors import ConfigurationError, PositionsFenced, TransientError
from replicator.meter import Meter, describe
from replicator.replay import AssignOnlyConsumer, Replay, _identifier, shadow_name
from replicator.settings import Settings
from replicator.sink import PartitionPosition, PositionFence
from replicator.swap import (
    grant_statements,
    old_name,
    plan_swap,
    rename_statements,
    renamed,
)
from replicator.watermarks import PartitionEnd, caught_up, describe_lag, lagging

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


# --------------------------------------------------------------------------- the consumer


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

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append(tp)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Msg]:
        return self.batches.pop(0) if self.batches else []

    def poll(self, timeout: float = -1) -> Msg | None:
        batch = self.consume()
        return batch[0] if batch else None

    def commit(self, *args: Any, **kwargs: Any) -> None:
        self.commits += 1

    def pause(self, partitions: list[TopicPartition]) -> str:
        return "paused"


def reader(batches: list[list[Msg]]) -> tuple[AssignOnlyConsumer, FakeConsumer, threading.Event]:
    fake, stop = FakeConsumer(batches), threading.Event()
    ends = {0: PartitionEnd(0, 0, 3), 1: PartitionEnd(1, 0, 0)}
    return AssignOnlyConsumer(fake, "t", ends, stop, Meter(enabled=False)), fake, stop  # type: ignore[arg-type]


def test_subscribe_assigns_every_partition_through_on_assign() -> None:
    consumer, fake, stop = reader([])
    seen: list[list[int]] = []

    def on_assign(c: AssignOnlyConsumer, partitions: list[TopicPartition]) -> None:
        seen.append([tp.partition for tp in partitions])
        for tp in partitions:
            tp.offset = 2 if tp.partition == 0 else OFFSET_BEGINNING
        c.assign(partitions)

    consumer.subscribe(["t"], on_assign=on_assign, on_revoke=None)
    assert seen == [[0, 1]] and [tp.partition for tp in fake.assigned] == [0, 1]
    assert consumer.read == {0: 2, 1: None} and not stop.is_set()


def test_stops_once_every_partition_is_read_to_its_end() -> None:
    eof = object()
    consumer, _fake, stop = reader([[Msg(0, 0), Msg(0, 1)], [Msg(0, 1, error=eof)], [Msg(0, 2)]])
    consumer.subscribe(["t"])
    consumer.consume(10)
    assert consumer.read[0] == 2 and not stop.is_set()
    consumer.consume(10)  # errors (end-of-partition...) move nothing
    assert consumer.events == 2 and not stop.is_set()
    assert consumer.poll(1.0) is not None  # poll is watched too
    assert stop.is_set() and consumer.events == 3


def test_a_seek_back_is_read_again_and_nothing_is_committed() -> None:
    consumer, fake, stop = reader([[Msg(0, 2)], [Msg(0, 1), Msg(0, 2)]])
    consumer.subscribe(["t"])
    consumer.consume()
    assert stop.is_set()
    stop.clear()
    consumer.seek(TopicPartition("t", 0, 1))  # after an outage: back to the stored position
    assert consumer.read[0] == 1 and fake.seeks
    consumer.consume()
    assert stop.is_set()
    consumer.commit(offsets=[], asynchronous=True)
    assert fake.commits == 0 and consumer.pause([]) == "paused"


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
        _identifier('bad"name')


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
    assert describe("replay", 500, 2000, "events", 2.0) == (
        "replay: 500/2,000 events (25%), 250 events/s, ETA 0:00:06"
    )
    assert describe("x", 0, 0, "keys", 0).endswith("0 keys/s, ETA 0:00:00")
