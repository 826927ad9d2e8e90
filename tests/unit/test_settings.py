from __future__ import annotations

import json
from pathlib import Path

import pytest

from replicator.errors import ConfigurationError
from replicator.settings import load_settings, read_env_file

BASE = {
    "REPLICATOR_TARGET_DSN": "postgresql://u:secret@db:5432/t",
    "REPLICATOR_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("REPLICATOR_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("REPLICATOR_STACK_DIR", "/nonexistent")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stack.env"
    path.write_text(text)
    return path


def test_env_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch) -> None:
    path = write(
        tmp_path,
        "# a comment\n\nREPLICATOR_TARGET_DSN=postgresql://a@h/db\n"
        "REPLICATOR_KAFKA_BOOTSTRAP=127.0.0.1:1\nREPLICATOR_TOPIC=from.file\nOTHER=x\n",
    )
    monkeypatch.setenv("REPLICATOR_TOPIC", "from.env")
    settings = load_settings(path)
    assert settings.kafka_bootstrap == "127.0.0.1:1"
    assert settings.topic == "from.env"
    assert settings.dead_letter_topic == "from.env.dlq"
    assert settings.target_dsn.get_secret_value() == "postgresql://a@h/db"


def test_flags_win_over_environment(monkeypatch) -> None:
    for k, v in BASE.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REPLICATOR_ON_DELETE", "delete")
    settings = load_settings(None, on_delete="ignore", group_id=None)
    assert settings.on_delete == "ignore"
    assert settings.group_id == "workflow-runs-replicator"


def test_defaults_are_documented_values(monkeypatch) -> None:
    for k, v in BASE.items():
        monkeypatch.setenv(k, v)
    s = load_settings(None)
    assert (s.batch_max_rows, s.batch_max_bytes, s.batch_max_ms) == (5000, 16 * 1024 * 1024, 100)
    assert s.target_table == "workflow_runs" and s.versions_table == "workflow_runs_versions"
    assert s.on_truncate == "ignore"


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("REPLICATOR_BATCH_MAX_ROWS", "0", "batch_max_rows"),
        ("REPLICATOR_BATCH_MAX_ROWS", "many", "batch_max_rows"),
        ("REPLICATOR_TARGET_TABLE", 'runs"; DROP TABLE x; --', "target_table"),
        ("REPLICATOR_KAFKA_BOOTSTRAP", "no-port", "kafka_bootstrap"),
        ("REPLICATOR_ON_DELETE", "maybe", "on_delete"),
        ("REPLICATOR_TOPIC", "bad topic", "topic"),
        ("REPLICATOR_KAFKA_CONFIG", "{not json", "kafka_config"),
    ],
)
def test_bad_values_name_the_field(monkeypatch, key: str, value: str, field: str) -> None:
    for k, v in BASE.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as err:
        load_settings(None)
    assert field in str(err.value)
    assert "secret" not in str(err.value)


def test_missing_required_fields_say_how_to_set_them() -> None:
    with pytest.raises(ConfigurationError) as err:
        load_settings(None)
    text = str(err.value)
    assert "REPLICATOR_TARGET_DSN" in text and "REPLICATOR_KAFKA_BOOTSTRAP" in text


def test_kafka_config_passes_through(monkeypatch) -> None:
    for k, v in BASE.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REPLICATOR_KAFKA_CONFIG", '{"security.protocol": "SASL_SSL"}')
    assert load_settings(None).kafka_config == {"security.protocol": "SASL_SSL"}


@pytest.mark.parametrize(
    "config",
    [
        '{"partition.assignment.strategy": "cooperative-sticky"}',
        '{"partition.assignment.strategy": "range,cooperative-sticky"}',
        '{"group.protocol": "consumer"}',
    ],
)
def test_incremental_rebalancing_is_refused_at_start(monkeypatch, config: str) -> None:
    for k, v in BASE.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("REPLICATOR_KAFKA_CONFIG", config)
    with pytest.raises(ConfigurationError) as err:
        load_settings(None)
    assert "kafka_config" in str(err.value) and "eager assignment" in str(err.value)


def test_eager_assignment_strategies_are_accepted(monkeypatch) -> None:
    for k, v in BASE.items():
        monkeypatch.setenv(k, v)
    config = '{"partition.assignment.strategy": "roundrobin", "group.protocol": "classic"}'
    monkeypatch.setenv("REPLICATOR_KAFKA_CONFIG", config)
    assert load_settings(None).kafka_config["partition.assignment.strategy"] == "roundrobin"


def test_secrets_are_masked_in_repr(monkeypatch) -> None:
    for k, v in BASE.items():
        monkeypatch.setenv(k, v)
    assert "secret" not in repr(load_settings(None))


@pytest.mark.parametrize("line", ["no equals sign", "=value"])
def test_malformed_env_file_lines(tmp_path: Path, line: str) -> None:
    with pytest.raises(ConfigurationError, match=r"stack\.env:2"):
        read_env_file(write(tmp_path, f"A=1\n{line}\n"))


def test_unreadable_env_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        read_env_file(tmp_path / "missing.env")


def test_admin_dsns_replace_the_service_ones_only_for_admin_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    plain = load_settings()
    assert plain.as_admin().target_dsn == plain.target_dsn  # unset: the same DSN
    monkeypatch.setenv("REPLICATOR_ADMIN_TARGET_DSN", "postgresql://owner:pw@db:5432/t")
    settings = load_settings()
    admin = settings.as_admin()
    assert settings.target_dsn.get_secret_value() == BASE["REPLICATOR_TARGET_DSN"]
    assert admin.target_dsn.get_secret_value() == "postgresql://owner:pw@db:5432/t"
    assert admin.source_dsn is None and admin.kafka_bootstrap == settings.kafka_bootstrap
    from replicator.settings import effective

    assert "pw" not in str(effective(settings)["admin_target_dsn"])  # masked


def test_the_local_stack_env_file_is_read_only_by_local_commands_or_when_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A production command started where a stack.env lies does not connect where it points."""
    state = tmp_path / "state"
    state.mkdir()
    write(state, "REPLICATOR_TARGET_DSN=postgresql://stack@h/db\nREPLICATOR_KAFKA_BOOTSTRAP=h:1\n")
    monkeypatch.setenv("REPLICATOR_STACK_DIR", str(state))
    with pytest.raises(ConfigurationError) as refused:
        load_settings(None)
    assert "target_dsn: missing" in str(refused.value)
    assert f"{state / 'stack.env'}: name it with --env-file" in str(refused.value)
    local = load_settings(None, local=True)  # `replicator sample`, a local stack command
    assert local.target_dsn.get_secret_value() == "postgresql://stack@h/db"
    monkeypatch.setenv("REPLICATOR_ENV_FILE", str(state / "stack.env"))  # named
    assert load_settings(None).kafka_bootstrap == "h:1"


def test_kafka_secrets_are_masked_in_repr_and_in_errors(monkeypatch) -> None:
    from replicator.settings import effective

    for k, v in BASE.items():
        monkeypatch.setenv(k, v)
    secret = {"sasl.password": "hunter2", "sasl.jaas.config": "pw=hunter2", "acks": "all"}
    monkeypatch.setenv("REPLICATOR_KAFKA_CONFIG", json.dumps(secret))
    settings = load_settings(None)
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert "hunter2" not in json.dumps(effective(settings))
    assert "'acks': 'all'" in repr(settings)  # what is not secret stays readable
    for bad in (
        {**secret, "group.protocol": "consumer"},  # a refused value beside the secrets
        {**secret, "sasl.password": ["hunter2"]},  # a secret of the wrong type
    ):
        monkeypatch.setenv("REPLICATOR_KAFKA_CONFIG", json.dumps(bad))
        with pytest.raises(ConfigurationError) as err:
            load_settings(None)
        assert "kafka_config" in str(err.value) and "hunter2" not in str(err.value), err.value
