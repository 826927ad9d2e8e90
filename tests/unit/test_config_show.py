from __future__ import annotations

from replicator.settings import Settings, effective, mask_dsn


def test_mask_dsn_hides_only_the_password() -> None:
    masked = mask_dsn("postgresql://app:hunter2@db.internal:6432/runs?sslmode=verify-full")
    assert "hunter2" not in masked
    assert "db.internal" in masked and "sslmode=verify-full" in masked and "6432" in masked
    assert mask_dsn("host=db dbname=x") == "dbname=x host=db"
    assert mask_dsn("not a dsn ===") == "<unparsable DSN>"


def test_effective_settings_mask_every_secret() -> None:
    settings = Settings(
        target_dsn="postgresql://a:s3cret@h/db",
        source_dsn="host=h password=pw2 dbname=legacy",
        kafka_bootstrap="k:9092",
        kafka_config={"sasl.password": "pw3", "security.protocol": "SASL_SSL"},
    )
    values = effective(settings)
    text = repr(values)
    for secret in ("s3cret", "pw2", "pw3"):
        assert secret not in text
    assert values["kafka_config"]["security.protocol"] == "SASL_SSL"
    assert values["dlq_topic"] == "legacy.public.workflow_processes.dlq"  # not None
    assert "dead_letter_topic" not in values  # one name for one setting
    assert set(Settings.model_fields) <= set(values)
