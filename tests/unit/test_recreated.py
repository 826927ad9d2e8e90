"""A re-created topic's generation completed by the consumer itself, only when the topic
holds the connector's whole new snapshot (stream/source/recreated.py); otherwise the
operator is asked, once."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest

from replicator.events import PartitionPosition
from replicator.observe.metrics import Metrics
from replicator.settings import Settings
from replicator.stream.apply.generations import Generation
from replicator.stream.source.decode import decode_json
from replicator.stream.source.ends import PartitionEnd
from replicator.stream.source.origin import TopicView
from replicator.stream.source.positioning import Positioning
from replicator.stream.source.recreated import _is_first_read


class Stored:
    def __init__(self, rows: list[Generation]) -> None:
        self.rows = rows
        self.completed: list[tuple[int, dict[int, int]]] = []

    def load_positions(self, topic: str) -> dict[int, PartitionPosition]:
        return {}

    def stream_closed(self, topic: str) -> bool:
        return False

    def load_generations(self, topic: str) -> list[Generation]:
        return list(self.rows)

    def record_recreated(self, topic: str, topic_id: str, partitions: list[int]) -> int | None:
        return None

    def complete_generation(self, topic: str, number: int, marks: dict[int, int]) -> None:
        self.completed.append((number, marks))

    def sweep(self, topic: str) -> tuple[int, int] | None:
        return None


class Topic:
    """The topic as the broker shows it; its ends grow each time it is described."""

    def __init__(self) -> None:
        self.described = 0

    def describe(self) -> TopicView:
        self.described += 1
        end = 10 * self.described
        return TopicView("topic-B", {0: PartitionEnd(0, 0, end), 1: PartitionEnd(1, 0, end)})

    def topic_id(self) -> str | None:
        return "topic-B"


def positioning(rows: list[Generation], whole: bool | None) -> tuple[Positioning, Stored, list]:
    settings = Settings(target_dsn="postgresql://a@b.invalid/c", kafka_bootstrap="k.invalid:1")
    stored = Stored(rows)
    p = Positioning(settings, stored, Metrics())
    p.topic_id = "topic-B"
    calls: list[int] = []

    def check(describe: Callable[[], TopicView]) -> bool | None:
        calls.append(describe().ends[0].end)
        return whole

    p._whole_snapshot = check
    return p, stored, calls


RECREATED = Generation(4, "topic-B", {0: 0, 1: 0})


def test_a_whole_new_snapshot_completes_the_generation_with_ends_read_after_the_check() -> None:
    p, stored, calls = positioning([RECREATED], whole=True)
    topic = Topic()
    p.complete_recreated(topic)
    # the marks are the ends read after Connect said the snapshot is committed, not before
    assert calls == [10] and stored.completed == [(4, {0: 20, 1: 20})]


@pytest.mark.parametrize(
    ("whole", "says"),
    [(None, "REPLICATOR_CONNECT_URL"), (False, "does not begin with a snapshot")],
)
def test_otherwise_nothing_is_completed_and_the_operator_is_asked_once(
    whole: bool | None, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    p, stored, _ = positioning([RECREATED], whole=whole)
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            p.complete_recreated(Topic())
    assert stored.completed == []
    asked = [r.getMessage() for r in caplog.records if "--resnapshot" in r.getMessage()]
    assert len(asked) == 1 and says in asked[0]


@pytest.mark.parametrize(
    "rows",
    [
        [],  # nothing recorded
        [Generation(4, "topic-B", {0: 0, 1: 0}, {0: 5, 1: 5})],  # complete already
        [Generation(4, "topic-B", {0: 7, 1: 3})],  # a --resnapshot's: it completes it itself
        [Generation(4, "topic-A", {0: 0, 1: 0})],  # recorded for another topic
        [RECREATED, Generation(5, "topic-B", {0: 9, 1: 9})],  # superseded by a newer one
    ],
)
def test_only_the_newest_unfinished_generation_of_this_re_created_topic_is_completed(
    rows: list[Generation],
) -> None:
    p, stored, calls = positioning(rows, whole=True)
    p.complete_recreated(Topic())
    assert calls == [] and stored.completed == []


def event(snapshot: str, op: str = "r") -> bytes:
    after = {"id": "wp-1", "workflow_name": "w", "message": "m"}
    source = {"snapshot": snapshot, "lsn": 10, "ts_ms": 1}
    return json.dumps({"op": op, "after": after, "before": None, "source": source}).encode()


class Msg:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def key(self) -> bytes:
        return b'{"id":"wp-1"}'

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


def test_only_a_snapshots_first_read_begins_a_snapshot() -> None:
    assert _is_first_read(decode_json, Msg(event("first")))
    assert not _is_first_read(decode_json, Msg(event("true")))  # the middle of one
    assert not _is_first_read(decode_json, Msg(event("incremental")))
    assert not _is_first_read(decode_json, Msg(event("false", op="c")))  # streamed
    assert not _is_first_read(decode_json, Msg(b"not json"))
