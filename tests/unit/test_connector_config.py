"""The connector config: deliberate settings, nothing environment-specific written in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replicator.clients.connect import ConnectClient, load_connector_file, mask_config
from replicator.errors import ConnectError
from replicator.local.stack import topic_name

ROOT = Path(__file__).resolve().parents[2]


def config() -> dict[str, str]:
    return load_connector_file()["config"]


def test_no_host_port_password_or_database_is_hard_coded() -> None:
    c = config()
    for key in (
        "database.hostname",
        "database.port",
        "database.user",
        "database.password",
        "database.dbname",
    ):
        assert c[key].startswith("${env:"), key


def test_settings_that_protect_data() -> None:
    c = config()
    assert c["plugin.name"] == "pgoutput"
    assert c["publication.autocreate.mode"] == "disabled"
    assert c["table.include.list"] == "public.workflow_processes"
    assert c["snapshot.mode"] == "initial"
    assert int(c["heartbeat.interval.ms"]) > 0
    # a quiet table must not pin the WAL: each heartbeat writes a row the slot streams
    assert "debezium_heartbeat" in c["heartbeat.action.query"]
    roles = (ROOT / "schemas" / "roles.sql").read_text()
    assert "'debezium_heartbeat'" in roles and "UPDATE ON debezium_heartbeat" in roles
    assert c["topic.creation.default.cleanup.policy"] == "compact"
    assert c["topic.creation.default.retention.ms"] == "-1"
    # without this, NULLs in columns with defaults arrive as the defaults
    assert c["value.converter.replace.null.with.default"] == "false"
    assert c["value.converter.schemas.enable"] == "false"


def test_every_value_is_a_string_as_the_rest_api_wants() -> None:
    raw = json.loads((ROOT / "connectors" / "workflow-processes.json").read_text())
    assert all(isinstance(v, str) for v in raw["config"].values())


def test_topic_name_follows_the_prefix() -> None:
    assert topic_name() == f"{config()['topic.prefix']}.public.workflow_processes"


def test_mask_config_hides_literal_secrets_only() -> None:
    masked = mask_config(
        {
            "database.password": "hunter2",
            "database.user": "dbz",
            "sasl.jaas.config": "org... password=x",
            "other.password": "${env:PW}",
        }
    )
    assert masked["database.password"] == "********"
    assert masked["sasl.jaas.config"] == "********"
    assert masked["database.user"] == "dbz"
    assert masked["other.password"] == "${env:PW}"


class Clock:
    """A monotonic clock that moves only when the client sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def scripted_client(monkeypatch: pytest.MonkeyPatch, states: list[str]) -> ConnectClient:
    """A client whose status walks through ``states`` (connector state; one task
    RUNNING), one per poll, then stays at the last."""
    clock = Clock()
    monkeypatch.setattr("replicator.clients.connect.time", clock)
    answers = iter(states)
    last = {"state": states[-1]}

    def status(name: str) -> dict:
        last["state"] = next(answers, last["state"])
        return {
            "name": name,
            "connector": {"state": last["state"]},
            "tasks": [{"id": 0, "state": "RUNNING"}],
        }

    client = ConnectClient("http://connect.invalid:8083")
    monkeypatch.setattr(client, "status", status)
    return client


def test_wait_running_outlasts_a_rebalance_right_after_the_config_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Connect answers RUNNING for the previous start, then UNASSIGNED while it rebalances
    client = scripted_client(monkeypatch, ["RUNNING", "UNASSIGNED", "UNASSIGNED", "RUNNING"])
    polls: list[str] = []
    status = client.status

    def counted(name: str) -> dict:
        answer = status(name)
        polls.append(answer["connector"]["state"])
        return answer

    monkeypatch.setattr(client, "status", counted)
    got = client.wait_running("workflow-processes", timeout=30, settle=1.5)
    assert got["connector"]["state"] == "RUNNING"
    assert polls[:4] == ["RUNNING", "UNASSIGNED", "UNASSIGNED", "RUNNING"]
    assert polls[4:] == ["RUNNING"] * 3  # held for 1.5 s before it was reported


def test_wait_running_gives_up_on_a_connector_that_never_settles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = scripted_client(monkeypatch, ["RUNNING", "UNASSIGNED"] * 100)
    with pytest.raises(ConnectError, match="not RUNNING after 10s"):
        client.wait_running("workflow-processes", timeout=10, settle=1.5)
