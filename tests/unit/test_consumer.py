"""The consumer's pure parts: event -> row change, batch bookkeeping, dead-letter headers."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer

from replicator.clients.kafka import client_config
from replicator.events import SNAPSHOT_VERSION, ChangeEvent, KafkaPosition, Op
from replicator.stream.apply.batch import Batch
from replicator.stream.apply.deadletter import dead_letter_headers
from replicator.stream.apply.transform import to_row_change

ROW = {
    "id": "wp-1",
    "workflow_name": "w",
    "message": "m",
    "max_turns": 30,
    "session_name": None,
    "git_branch": None,
    "repository_url": None,
    "created_at": 0,
    "updated_at": 0,
    "status": None,
    "result": None,
    "error_message": None,
    "execution_time": None,
    "total_cost": None,
    "started_at": None,
    "completed_at": None,
}
POS = KafkaPosition("t", 0, 5)


def event(op: Op, *, after=ROW, before=None, lsn=100, snapshot=None) -> ChangeEvent:
    return ChangeEvent(op, "wp-1", before, after, lsn, 1, snapshot, POS)


@pytest.mark.parametrize("op", [Op.CREATE, Op.UPDATE])
def test_streamed_changes_keep_their_lsn(op: Op) -> None:
    change = to_row_change(event(op))
    assert change is not None and change.lsn == 100 and not change.delete
    assert change.run_id == "wp-1" and change.values[4] == "pending"


@pytest.mark.parametrize("snapshot", ["first", "true", "last", None])
def test_snapshot_reads_get_the_weakest_version(snapshot: str | None) -> None:
    change = to_row_change(event(Op.READ, lsn=10**9, snapshot=snapshot))
    assert change is not None and change.lsn == SNAPSHOT_VERSION == 0


def test_incremental_snapshot_reads_are_snapshot_reads_of_their_generation() -> None:
    change = to_row_change(event(Op.READ, lsn=None, snapshot="incremental"), generation=2)
    assert change is not None and (change.generation, change.lsn) == (2, SNAPSHOT_VERSION)


def test_delete_uses_the_key() -> None:
    change = to_row_change(event(Op.DELETE, after=None, before={"id": "wp-1"}))
    assert change is not None and change.delete and change.run_id == "wp-1" and change.lsn == 100


def test_unavailable_columns_are_reported() -> None:
    change = to_row_change(
        event(Op.UPDATE, after={**ROW, "result": "__debezium_unavailable_value"})
    )
    assert change is not None and change.unavailable == frozenset({"result_data"})


@pytest.mark.parametrize("op", [Op.TRUNCATE, Op.MESSAGE])
def test_ops_without_row_effect(op: Op) -> None:
    assert to_row_change(event(op, after=None)) is None


def test_batch_tracks_next_offsets_and_last_lsn() -> None:
    batch = Batch()
    batch.advance(0, 10, 500)
    batch.advance(1, 3, None)
    batch.advance(0, 11, None)  # a tombstone keeps the partition's last LSN
    assert len(batch) == 3
    assert batch.next_offsets == {0: 12, 1: 4}
    assert batch.last_lsns == {0: 500}


class FakeMessage:
    def topic(self) -> str:
        return "src"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 41

    def headers(self):
        return [("trace", b"x")]


def test_dead_letter_headers_say_where_and_why() -> None:
    headers = dict(dead_letter_headers("decode_error", "bad bytes", FakeMessage()))  # type: ignore[arg-type]
    assert headers == {
        "dlq.reason": b"decode_error",
        "dlq.error": b"bad bytes",
        "dlq.topic": b"src",
        "dlq.partition": b"2",
        "dlq.offset": b"41",
        "trace": b"x",
    }


def test_kafka_config_tunes_the_consumer_but_cannot_undo_the_guarantees() -> None:
    extra = {
        "fetch.wait.max.ms": "200",
        "security.protocol": "SASL_SSL",
        "enable.auto.commit": "true",
        "group.id": "other",
    }
    seen = client_config("group", "k1:9092", extra, **{"group.id": "workflow-runs-replicator"})
    assert seen["fetch.wait.max.ms"] == "200"
    assert seen["security.protocol"] == "SASL_SSL"
    assert seen["enable.auto.commit"] is False
    assert seen["enable.auto.offset.store"] is False
    assert seen["group.id"] == "workflow-runs-replicator"
    reader = client_config("reader", "k1:9092", extra)
    assert reader["group.id"].startswith("replicator-reader-")
    assert reader["enable.auto.commit"] is False


def test_group_settings_reach_the_group_member_only() -> None:
    """A reader never joins a group: the user's group tuning would make librdkafka refuse
    to create it (max.poll.interval.ms below the default session timeout)."""
    extra = {"max.poll.interval.ms": 7000, "session.timeout.ms": 6000, "client.rack": "r1"}
    assert client_config("group", "k1:9092", extra)["max.poll.interval.ms"] == 7000
    for kind in ("reader", "producer", "admin"):
        config = client_config(kind, "k1:9092", extra)  # type: ignore[arg-type]
        assert "max.poll.interval.ms" not in config and "session.timeout.ms" not in config
        assert config["client.rack"] == "r1"
    Consumer(client_config("reader", "k1:9092", extra)).close()  # librdkafka accepts it


def test_the_group_watch_reads_the_join_state_from_the_client_statistics() -> None:
    """librdkafka's statistics give the group's join state; the watch keeps how long the
    member has gone without a stable group, and skips a document it cannot read."""
    import json

    from replicator.stream.source.consumer import GroupWatch, KafkaSource

    watch = GroupWatch()
    assert watch.state is None
    watch.stats(json.dumps({"cgrp": {"state": "up", "join_state": "steady"}}))
    assert watch.state is not None and watch.state.join_state == "steady"
    assert watch.state.unsettled_s == 0.0
    watch._settled_at -= 90  # the group was last stable 90 s ago
    watch.stats(json.dumps({"cgrp": {"state": "up", "join_state": "wait-sync"}}))
    assert watch.state.join_state == "wait-sync" and watch.state.unsettled_s >= 90
    before = watch.state
    for broken in ("not json", "[]", json.dumps({"cgrp": None}), json.dumps({"name": "x"})):
        watch.stats(broken)
        assert watch.state == before
    source = KafkaSource(None, "t", group=watch)
    assert source.group_state() is before
    assert KafkaSource(None, "t").group_state() is None


def test_the_group_member_asks_its_client_for_statistics() -> None:
    """A real consumer accepts the statistics settings (librdkafka refuses a stats_cb
    without an interval) and starts without a report."""
    from replicator.settings import Settings
    from replicator.stream.source.consumer import KafkaSource

    settings = Settings(target_dsn="postgresql://a@b.invalid/c", kafka_bootstrap="k.invalid:1")
    source = KafkaSource.group_member(settings)
    try:
        assert source.group_state() is None
    finally:
        source._consumer.close()
