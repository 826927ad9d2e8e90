"""The connector config: deliberate settings, nothing environment-specific written in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replicator.clients.connect import ConnectClient, load_connector_file, mask_config
from replicator.errors import ConnectBusy, ConnectError
from replicator.local.stack import topic_name
from replicator.settings import mask_kafka_config

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
    # the topic is the table's whole log: nothing expires, and a TRUNCATE's keyless event
    # is accepted (Apache Kafka refuses a keyless record on a compacted topic)
    assert c["topic.creation.default.cleanup.policy"] == "delete"
    assert c["topic.creation.default.retention.ms"] == "-1"
    assert c["topic.creation.default.retention.bytes"] == "-1"
    assert "t" not in c["skipped.operations"]
    # without this, NULLs in columns with defaults arrive as the defaults
    assert c["value.converter.replace.null.with.default"] == "false"
    assert c["value.converter.schemas.enable"] == "false"


def test_every_value_is_a_string_as_the_rest_api_wants() -> None:
    raw = json.loads((ROOT / "connectors" / "workflow-processes.json").read_text())
    assert all(isinstance(v, str) for v in raw["config"].values())


def test_topic_name_follows_the_prefix() -> None:
    assert topic_name() == f"{config()['topic.prefix']}.public.workflow_processes"


@pytest.mark.parametrize(
    "key",
    [
        "database.password",
        "value.converter.basic.auth.user.info",
        "key.converter.schema.registry.basic.auth.user.info",
        "value.converter.bearer.auth.token",
        "producer.override.sasl.jaas.config",
        "consumer.override.ssl.keystore.password",
        "producer.override.ssl.key.pem",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "aws.credentials.provider.secret",
        "database.sslpassword",
    ],
)
def test_every_credential_shaped_key_is_masked_wherever_settings_are_printed(key: str) -> None:
    assert mask_config({key: "s3cr3t"}) == {key: "********"}  # connector apply's output
    assert mask_kafka_config({key: "s3cr3t"}) == {key: "********"}  # config show, errors
    assert mask_config({key: "${env:X}"}) == {key: "${env:X}"}  # a placeholder is no secret


def test_settings_that_are_no_credentials_stay_readable() -> None:
    plain = {
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "message.key.columns": "public.t:id",
        "database.user": "dbz",
        "sasl.mechanism": "SCRAM-SHA-512",
        "ssl.ca.location": "/etc/kafka-ca/ca.crt",
    }
    assert mask_config(plain) == plain
    assert mask_kafka_config(plain) == plain


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


class ScriptedConnect:
    """A Connect whose one task answers ``task_states`` in turn (then the last), and
    which records the calls that change something."""

    def __init__(self, connector: str, task_states: list[str]) -> None:
        self.connector = connector
        self.task_states = list(task_states)
        self.calls: list[str] = []
        self.registered = ["workflow-processes"]

    def status(self, name: str) -> dict:
        state = self.task_states.pop(0) if len(self.task_states) > 1 else self.task_states[0]
        task = {"id": 0, "state": state}
        if state == "FAILED":
            task["trace"] = "io.debezium.DebeziumException: Couldn't obtain encoding\n\tat x"
        return {"name": name, "connector": {"state": self.connector}, "tasks": [task]}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> ConnectClient:
        monkeypatch.setattr("replicator.clients.connect.time", Clock())
        client = ConnectClient("http://connect.invalid:8083")
        monkeypatch.setattr(client, "status", self.status)
        monkeypatch.setattr(client, "names", lambda: list(self.registered))
        monkeypatch.setattr(client, "put_config", lambda n, c: self.calls.append("put_config"))
        monkeypatch.setattr(client, "resume", lambda n: self.resume())
        monkeypatch.setattr(
            client,
            "restart",
            lambda n, only_failed=False: self.calls.append(f"restart {only_failed}"),
        )
        return client

    def resume(self) -> None:
        self.calls.append("resume")
        self.connector = "RUNNING"


def test_a_task_that_failed_while_its_database_was_starting_is_restarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connect = ScriptedConnect("RUNNING", ["FAILED", "RUNNING"])
    client = connect.install(monkeypatch)
    got = client.wait_running("workflow-processes", timeout=60)
    assert got["tasks"][0]["state"] == "RUNNING"
    assert connect.calls == ["restart True"]  # the failed task only


def test_a_task_that_keeps_failing_is_reported_with_its_trace_after_a_few_restarts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connect = ScriptedConnect("RUNNING", ["FAILED"])
    client = connect.install(monkeypatch)
    with pytest.raises(ConnectError, match=r"FAILED \(restarted 3 times\).*obtain encoding"):
        client.wait_running("workflow-processes", timeout=60)
    assert connect.calls == ["restart True"] * 3


def test_apply_resumes_a_connector_an_interrupted_resnapshot_left_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connect = ScriptedConnect("STOPPED", ["RUNNING"])
    client = connect.install(monkeypatch)
    got = client.apply("workflow-processes", {"a": "b"}, timeout=30)
    assert got["connector"]["state"] == "RUNNING"
    assert connect.calls == ["put_config", "resume"]


def test_apply_resumes_without_trusting_the_state_read_right_after_the_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Connect may still answer RUNNING, the state before the write, for a connector that
    # an interrupted --resnapshot left STOPPED: resuming is asked for all the same
    connect = ScriptedConnect("RUNNING", ["RUNNING"])
    client = connect.install(monkeypatch)
    client.apply("workflow-processes", {"a": "b"}, timeout=30)
    assert connect.calls == ["put_config", "resume"]


def test_apply_registers_a_new_connector_without_resuming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connect = ScriptedConnect("RUNNING", ["RUNNING"])
    connect.registered = []
    client = connect.install(monkeypatch)
    client.apply("workflow-processes", {"a": "b"}, timeout=30)
    assert connect.calls == ["put_config"]


def test_apply_waits_for_a_worker_still_joining_its_group(monkeypatch: pytest.MonkeyPatch) -> None:
    # a worker just started accepts connections, then holds requests until it has joined
    connect = ScriptedConnect("RUNNING", ["RUNNING"])
    client = connect.install(monkeypatch)
    answers = [ConnectBusy("timed out"), ConnectBusy("HTTP 409: rebalance"), None]

    def put_config(name: str, config: dict[str, str]) -> None:
        connect.calls.append("put_config")
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    monkeypatch.setattr(client, "put_config", put_config)
    client.apply("workflow-processes", {"a": "b"}, timeout=30)
    assert connect.calls == ["put_config"] * 3 + ["resume"]


def test_apply_of_a_new_connector_does_not_need_its_status_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connect = ScriptedConnect("RUNNING", ["RUNNING"])
    connect.registered = []
    client = connect.install(monkeypatch)
    statuses = [ConnectError("HTTP 404: No status found")]

    def status(name: str) -> dict:
        if statuses:
            raise statuses.pop(0)
        return connect.status(name)

    monkeypatch.setattr(client, "status", status)
    got = client.apply("workflow-processes", {"a": "b"}, timeout=30)
    assert got["connector"]["state"] == "RUNNING" and connect.calls == ["put_config"]


def test_a_client_error_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    connect = ScriptedConnect("RUNNING", ["RUNNING"])
    client = connect.install(monkeypatch)

    def put_config(name: str, config: dict[str, str]) -> None:
        connect.calls.append("put_config")
        raise ConnectError("HTTP 400: Connector configuration is invalid")

    monkeypatch.setattr(client, "put_config", put_config)
    with pytest.raises(ConnectError, match="invalid"):
        client.apply("workflow-processes", {"a": "b"}, timeout=30)
    assert connect.calls == ["put_config"]


def test_the_rollback_registers_the_connector_file_the_settings_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment's connector file (the kit's adds TLS to PostgreSQL) is the one every
    command registers again, not the bundled one."""
    from replicator.cutover import rollback
    from replicator.settings import Settings

    spec = load_connector_file()
    spec["config"]["database.sslmode"] = "verify-full"
    path = tmp_path / "connector.json"
    path.write_text(json.dumps(spec))
    applied: list[dict[str, str]] = []

    class Client:
        def __init__(self, url: str) -> None:
            pass

        def apply(self, name: str, config: dict[str, str], timeout: float) -> None:
            applied.append(config)

    monkeypatch.setattr(rollback, "ConnectClient", Client)
    settings = Settings(
        target_dsn="postgresql://a@b.invalid/c",
        kafka_bootstrap="k.invalid:1",
        connect_url="http://connect.invalid:8083",
        connector_file=path,
    )
    rollback.reconnect(settings, lambda line: None)
    (config,) = applied
    assert config["database.sslmode"] == "verify-full" and config["snapshot.mode"] == "no_data"
