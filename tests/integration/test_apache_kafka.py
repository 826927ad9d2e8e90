"""What Apache Kafka refuses, through the real connector: a TRUNCATE (a keyless event), a
row of 5 MB (below the largest event that flows) and a row above it.

The local broker accepts what Apache Kafka refuses, so every record these tests produce
is held to Apache Kafka's rules (replicator/local/kafka_rules.py), as the session's
stack is at its end (conftest.py).  The first test shows that check saying no on this
broker."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from replicator.clients.connect import ConnectClient
from replicator.clients.kafka import EVENT_MAX_BYTES
from replicator.local import kafka_rules
from replicator.mapping.columns import TARGET_COLUMNS
from tests.integration.conftest import (
    RunningReplicator,
    StackInfo,
    execute,
    mapped_source,
    target_rows,
    unique,
    wait_converged,
)
from tests.integration.isolated import isolated_source
from tests.integration.test_verify import run_verify

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def big_row(dsn: str, run_id: str, megabytes: float) -> None:
    """A row whose ``result`` holds ``megabytes`` of hex text (no character JSON escapes)."""
    blocks = int(megabytes * MB) // 32
    execute(
        dsn,
        (
            "INSERT INTO workflow_processes (id, workflow_name, message, status, result)"
            " SELECT %s, 'import', 'a large result', 'completed',"
            " string_agg(md5(i::text), '') FROM generate_series(1, %s) AS i",
            (run_id, blocks),
        ),
    )


def task_states(stack: StackInfo, name: str) -> list[str]:
    return [t["state"] for t in ConnectClient(stack.connect_url).status(name)["tasks"]]


def connector_of(stack: StackInfo) -> str:
    """The isolated source's connector (its topic prefix is in its config)."""
    client = ConnectClient(stack.connect_url)
    prefix = stack.topic.removesuffix(".public.workflow_processes")
    (name,) = [n for n in client.names() if client.get_config(n).get("topic.prefix") == prefix]
    return name


def test_the_check_says_no_where_apache_kafka_would(stack: StackInfo) -> None:
    compacted, small = unique("rules-compacted"), unique("rules-small")
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(compacted, 1, 1, config={"cleanup.policy": "compact"}),
            NewTopic(small, 1, 1),  # no max.message.bytes: the broker's 1 MB default
        ]
    )
    for future in futures.values():
        future.result(30)
    try:
        producer = Producer({"bootstrap.servers": stack.bootstrap, "message.max.bytes": 4 * MB})
        producer.produce(compacted, key=None, value=b'{"op":"t"}')
        producer.produce(compacted, key=b'{"id":"k"}', value=b"{}")
        producer.produce(small, key=b'{"id":"k"}', value=b"x" * (MB + 1))
        producer.produce(small, key=b'{"id":"k"}', value=b"x" * (MB - 200))
        assert producer.flush(30) == 0  # the local broker takes all four
        found = [
            v for v in kafka_rules.check_topics(stack.bootstrap) if v.topic in (compacted, small)
        ]
        assert [(v.topic, v.offset, v.rule) for v in found] == [
            (compacted, 0, "keyless record on a compacted topic"),
            (small, 0, "record too large"),
        ]
    finally:
        for future in admin.delete_topics([compacted, small]).values():
            future.result(30)


def test_a_truncate_and_a_5_mb_row_flow_and_nothing_is_refused(stack: StackInfo) -> None:
    with isolated_source(stack, "akt") as iso:
        name = connector_of(iso)
        table = unique("wr")
        settings = iso.settings(target_table=table, group_id=unique("g"), on_truncate="apply")
        execute(iso.source_dsn, "INSERT INTO workflow_processes (id, workflow_name, message)"
                " SELECT 'a-' || i, 'w', 'm' FROM generate_series(1, 20) AS i")  # fmt: skip
        big_row(iso.source_dsn, "a-big", 5)
        with RunningReplicator(settings):
            wait_converged(iso, table, "")
            execute(iso.source_dsn, "TRUNCATE workflow_processes")
            big_row(iso.source_dsn, "b-big", 5)
            execute(iso.source_dsn, "INSERT INTO workflow_processes (id, workflow_name, message)"
                    " VALUES ('b-1', 'w', 'm')")  # fmt: skip
            rows = wait_converged(iso, table, "", timeout=120)
        assert sorted(rows) == ["b-1", "b-big"]  # the truncate applied, in its place
        assert (
            len(json.loads(rows["b-big"][TARGET_COLUMNS.index("result_data")])["result"])
            == 5 * MB // 32 * 32
        )
        assert task_states(iso, name) == ["RUNNING"]
        records = list(kafka_rules.stored_records(iso.bootstrap, iso.topic))
        assert any(r.key is None for r in records)  # the truncate's event reached the topic
        assert max(r.size for r in records) > 5 * MB
        config = kafka_rules.topic_configs(iso.bootstrap)[iso.topic]
        assert kafka_rules.violations(iso.topic, config, records) == []


def test_a_row_above_the_largest_event_is_skipped_found_and_written_from_the_source(
    stack: StackInfo, cli_env: dict[str, str]
) -> None:
    with isolated_source(stack, "akb") as iso:
        name = connector_of(iso)
        table = unique("wr")
        settings = iso.settings(target_table=table, group_id=unique("g"))
        env = cli_env | {
            "REPLICATOR_SOURCE_DSN": iso.service_source_dsn,
            "REPLICATOR_ADMIN_SOURCE_DSN": iso.source_dsn,
            "REPLICATOR_TOPIC": iso.topic,
        }
        huge_mb = EVENT_MAX_BYTES / MB + 4
        with RunningReplicator(settings):
            big_row(iso.source_dsn, "huge", huge_mb)
            execute(iso.source_dsn, "INSERT INTO workflow_processes (id, workflow_name, message)"
                    " VALUES ('after', 'w', 'm')")  # fmt: skip
            wait_converged(iso, table, "after")  # the stream goes on past the huge row
            assert task_states(iso, name) == ["RUNNING"]
            assert target_rows(iso.target_dsn, table, "run_id = 'huge'") == {}

            code, report = run_verify(env, "--target-table", table)
            assert (code, report["status"]) == (1, "drift"), report
            assert report["missing"]["ids"] == ["huge"]
            (row,) = report["too_large_for_the_stream"]["rows"]
            assert row["run_id"] == "huge" and row["json_bytes"] > EVENT_MAX_BYTES

            code, report = run_verify(env, "--target-table", table, "--repair")
            assert (code, report["status"]) == (0, "in_sync"), report
            assert report["repair"]["from_source"] == 1
            # a later change of the row streams over the written version (its unchanged
            # TOASTed result is not in the event: the written one stays)
            execute(iso.source_dsn, "UPDATE workflow_processes SET status = 'archived'"
                    " WHERE id = 'huge'")  # fmt: skip
            rows = wait_converged(iso, table, "huge", timeout=60)
            assert rows["huge"][TARGET_COLUMNS.index("status")] == "archived"
        assert mapped_source(iso.source_dsn) == target_rows(iso.target_dsn, table)
