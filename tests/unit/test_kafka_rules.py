"""Apache Kafka's produce-side rules: the pure check over stored records
(replicator/local/kafka_rules.py) and the connector config's rules
(``kafka_rule_problems``), which the shipped connector file must pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replicator.clients.connect import (
    NEVER,
    change_topic_config,
    kafka_rule_problems,
    load_connector_file,
)
from replicator.clients.kafka import EVENT_MAX_BYTES, LETTER_MAX_BYTES, client_config
from replicator.errors import ConfigurationError
from replicator.local.kafka_rules import (
    BATCH_OVERHEAD,
    BROKER_DEFAULT_MAX_MESSAGE_BYTES,
    Record,
    violations,
)


def shipped() -> dict[str, str]:
    return dict(load_connector_file()["config"])


def test_a_keyless_record_on_a_compacted_topic_is_refused_and_elsewhere_accepted() -> None:
    records = [Record(3, 0, None, 400), Record(3, 1, b'{"id":"a"}', 700)]
    (found,) = violations("t", {"cleanup.policy": "compact,delete"}, records)
    assert (found.partition, found.offset, found.rule) == (
        3,
        0,
        "keyless record on a compacted topic",
    )
    assert violations("t", {"cleanup.policy": "delete"}, records) == []
    assert violations("t", {}, records) == []  # Kafka's default policy is delete


def test_a_record_above_the_topic_limit_or_the_broker_default_is_refused() -> None:
    at_limit = Record(0, 0, b"k", BROKER_DEFAULT_MAX_MESSAGE_BYTES - BATCH_OVERHEAD)
    above = Record(0, 1, b"k", BROKER_DEFAULT_MAX_MESSAGE_BYTES - BATCH_OVERHEAD + 1)
    found = violations("t", {"cleanup.policy": "delete"}, [at_limit, above])
    assert [(v.offset, v.rule) for v in found] == [(1, "record too large")]
    roomy = {"max.message.bytes": str(EVENT_MAX_BYTES)}
    assert violations("t", roomy, [above]) == []


def test_the_shipped_connector_passes_apache_kafkas_rules() -> None:
    config = shipped()
    assert kafka_rule_problems(config) == []
    topic = change_topic_config(config)
    assert topic["cleanup.policy"] == "delete"
    assert int(topic["max.message.bytes"]) == EVENT_MAX_BYTES
    assert int(config["producer.override.max.request.size"]) == EVENT_MAX_BYTES
    assert config["errors.tolerance"] == "all"  # a row too large is skipped, not fatal
    assert int(config["producer.override.delivery.timeout.ms"]) == NEVER
    # the heartbeat topic keeps only its newest record: compacted, and its records are keyed
    assert config["topic.creation.groups"] == "heartbeats"
    assert config["topic.creation.heartbeats.cleanup.policy"] == "compact"


def test_the_consumers_fetch_the_largest_record_whole() -> None:
    for kind in ("group", "reader"):
        c = client_config(kind, "k:1", {})
        assert c["max.partition.fetch.bytes"] >= LETTER_MAX_BYTES
        assert c["fetch.max.bytes"] >= c["max.partition.fetch.bytes"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"topic.creation.default.cleanup.policy": "compact"}, "truncate events"),
        ({"topic.creation.default.cleanup.policy": "compact,delete"}, "truncate events"),
        ({"producer.override.max.request.size": str(EVENT_MAX_BYTES + 1)}, "max.message.bytes"),
        ({"topic.creation.default.max.message.bytes": None}, "max.message.bytes"),
        ({"producer.override.delivery.timeout.ms": None}, "delivery.timeout.ms 120000"),
        ({"producer.override.max.request.size": "lots"}, "is not a number"),
    ],
)
def test_a_config_apache_kafka_would_stop_or_skip_on_is_refused(
    change: dict[str, str | None], says: str
) -> None:
    config = shipped()
    for key, value in change.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    problems = kafka_rule_problems(config)
    assert any(says in p for p in problems), problems


def test_truncates_skipped_at_the_source_may_go_to_a_compacted_topic() -> None:
    config = shipped() | {
        "topic.creation.default.cleanup.policy": "compact",
        "skipped.operations": "t",
    }
    assert kafka_rule_problems(config) == []


def test_a_group_matching_the_change_topic_decides_its_policy() -> None:
    config = shipped() | {
        "topic.creation.groups": "heartbeats,changes",
        "topic.creation.changes.include": r"legacy\.public\..*",
        "topic.creation.changes.cleanup.policy": "compact",
    }
    assert "truncate events" in kafka_rule_problems(config)[0]
    assert change_topic_config(config)["partitions"] == "${env:DBZ_TOPIC_PARTITIONS}"


def test_loading_a_connector_file_apache_kafka_would_stop_on_fails_with_the_reason(
    tmp_path: Path,
) -> None:
    spec = load_connector_file()
    spec["config"]["topic.creation.default.cleanup.policy"] = "compact"
    path = tmp_path / "connector.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ConfigurationError, match="would stop or lose events on Apache Kafka"):
        load_connector_file(path)
