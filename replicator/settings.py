"""The one typed settings model.

Sources, highest precedence first: command-line flags, ``REPLICATOR_*`` environment
variables, the env file (``--env-file`` or ``REPLICATOR_ENV_FILE``), the defaults on the
fields.  The local stack's ``.replicator/stack/stack.env`` is read only by the local
stack's own commands (``stack``, ``sample``) or when named: a production command started
in a directory that happens to hold one must not connect where that file points.  Every
value is validated when the process starts; a bad one raises
:class:`~replicator.errors.ConfigurationError` naming the field and how to fix it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from replicator.db.names import IDENTIFIER, IDENTIFIER_RULE
from replicator.errors import ConfigurationError

DEFAULT_STACK_DIR = Path(".replicator/stack")


class Settings(BaseSettings):
    """Everything ``replicator`` reads from the outside world."""

    model_config = SettingsConfigDict(
        env_prefix="REPLICATOR_", extra="ignore", frozen=True, validate_default=True
    )

    # where things are
    source_dsn: SecretStr | None = Field(
        None, description="libpq DSN of the database holding workflow_processes"
    )
    target_dsn: SecretStr = Field(
        ..., description="libpq DSN of the database holding workflow_runs (may be the source)"
    )
    admin_source_dsn: SecretStr | None = Field(
        None,
        description="DSN of a role owning the source tables, for the administrative commands"
        " (schema apply, sample); default: source_dsn",
    )
    admin_target_dsn: SecretStr | None = Field(
        None,
        description="DSN of a role owning the target tables, for the commands that create"
        " tables and indexes (schema apply, backfill, replay); default: target_dsn",
    )
    kafka_bootstrap: str = Field(..., description="Kafka bootstrap servers, host:port[,...]")
    connect_url: str | None = Field(None, description="Kafka Connect REST URL")
    connector_file: Path | None = Field(
        None, description="the connector config the commands register (default: the bundled one)"
    )
    topic: str = Field(
        "legacy.public.workflow_processes", description="Debezium change topic to consume"
    )
    dlq_topic: str | None = Field(None, description="dead-letter topic (default: <topic>.dlq)")
    group_id: str = Field("workflow-runs-replicator", description="Kafka consumer group")
    kafka_config: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="extra librdkafka settings (SASL, SSL, tuning) as a JSON object of strings,"
        " numbers and booleans; never what the guarantees rest on (group.id, auto commit and"
        " offset store off); incremental rebalancing is refused",
    )

    # what goes where
    target_table: str = Field("workflow_runs", description="target table name")
    offsets_table: str = Field("replicator_offsets", description="positions table name")
    value_format: Literal["json", "avro"] = Field("json", description="event encoding")
    schema_registry_url: str | None = Field(None, description="Schema Registry URL (avro)")
    on_delete: Literal["delete", "ignore"] = Field(
        "delete", description="a source DELETE deletes the target row, or is ignored (audit)"
    )
    on_truncate: Literal["ignore", "apply"] = Field(
        "ignore",
        description="a source TRUNCATE is logged and counted (ignore) or empties the target",
    )

    # batching: a batch is applied when any limit is reached
    batch_max_rows: int = Field(5000, ge=1, le=1_000_000, description="events per batch")
    batch_max_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="message bytes per batch")
    batch_max_ms: int = Field(
        100, ge=1, le=60_000, description="max time an event waits in a batch (ms)"
    )
    apply_lock_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="an apply waiting this long for a lock on the target gives up and retries",
    )
    apply_statement_timeout_s: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="an apply statement running this long is cancelled and retried",
    )
    apply_lanes: int = Field(
        2,
        ge=1,
        le=16,
        description="target connections applying the batches of different partitions at once",
    )

    # behaviour
    session_timeout_ms: int = Field(10_000, ge=1000, description="consumer group session timeout")
    retry_backoff_max_s: float = Field(
        30.0, gt=0, description="longest wait between retries of an unavailable target"
    )
    log_format: Literal["json", "human"] = Field("json", description="log line format")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    progress_interval_s: float = Field(10.0, gt=0, description="seconds between progress log lines")

    # operations
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve /metrics, /healthz, /readyz here (off if unset)"
    )
    metrics_host: str = Field("0.0.0.0", description="address the metrics endpoint binds")
    accept_gap: bool = Field(
        False,
        description="start a partition whose stored position the broker no longer holds at"
        " the oldest offset it holds (after repairing the target with verify --repair)",
    )
    stall_after_s: float = Field(
        120.0, gt=0, description="/readyz fails after this long without progress while lagging"
    )
    slot_name: str = Field(
        "replicator_workflow_processes",
        description="the connector's replication slot, for the slot-lag metric",
    )

    @field_validator("target_table", "offsets_table")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError(f"must be {IDENTIFIER_RULE}")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    @field_validator("topic", "group_id")
    @classmethod
    def _kafka_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9._-]{1,249}$", value):
            raise ValueError("may hold only letters, digits, '.', '_' and '-'")
        return value

    @field_validator("kafka_config")
    @classmethod
    def _eager_rebalance(cls, value: dict[str, Any]) -> dict[str, Any]:
        """The consumer positions every partition it is given from the target and gives up
        all of them at a rebalance (eager assignment): incremental assignment (the
        cooperative-sticky strategy, the KIP-848 ``consumer`` protocol) would hand over
        partitions without those callbacks, so it is refused here, at start."""
        strategy = str(value.get("partition.assignment.strategy", ""))
        if "cooperative" in strategy.lower():
            raise ValueError(
                f"partition.assignment.strategy={strategy!r} is not supported: the replicator"
                " needs eager assignment (range or roundrobin; leave it unset)"
            )
        protocol = str(value.get("group.protocol", "classic"))
        if protocol.lower() != "classic":
            raise ValueError(
                f"group.protocol={protocol!r} is not supported: the replicator needs the classic"
                " group protocol with eager assignment (leave it unset)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.value_format == "avro" and not self.schema_registry_url:
            raise ValueError("value_format=avro needs schema_registry_url")
        return self

    def __repr_args__(self) -> Any:  # repr() and str() never show a Kafka secret
        for name, value in super().__repr_args__():
            yield name, mask_kafka_config(value) if name == "kafka_config" else value

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"

    def as_admin(self) -> Settings:
        """These settings with the administrative DSNs in place of the service's ones.

        ``replicator run`` and ``verify`` need only DML and SELECT (schemas/roles.sql);
        the commands that create tables, indexes or source rows run with these.
        """
        return self.model_copy(
            update={
                "source_dsn": self.admin_source_dsn or self.source_dsn,
                "target_dsn": self.admin_target_dsn or self.target_dsn,
            }
        )

    @property
    def slot_dsn(self) -> str:
        """Where the connector's replication slot lives, as the tables' owner: the source
        database (the target's when it is the same database and no source is set)."""
        admin = self.as_admin()
        return (admin.source_dsn or admin.target_dsn).get_secret_value()

    @property
    def versions_table(self) -> str:
        return f"{self.target_table}_versions"


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced, for display."""
    import psycopg.conninfo

    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparsable DSN>"
    if parts.get("password"):
        parts["password"] = "********"
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


#: Parts of a setting's name that make its value a credential, in every config the product
#: prints (librdkafka's, Kafka Connect's, the Schema Registry's): ``sasl.password``,
#: ``sasl.jaas.config``, ``ssl.key.pem``, ``ssl.keystore.password``,
#: ``sasl.oauthbearer.client.secret``, ``sasl.oauthbearer.config``,
#: ``value.converter.basic.auth.user.info``, ``bearer.auth.token``, ``*.credentials.*``.
SECRET_WORDS: tuple[str, ...] = ("password", "secret", "jaas", "ssl.key", "private.key")
SECRET_WORDS += ("token", "oauthbearer.config", "user.info", "credential")


def is_secret(name: str) -> bool:
    """Pure. Whether the setting called ``name`` holds a credential (:data:`SECRET_WORDS`)."""
    lowered = name.lower()
    return any(w in lowered for w in SECRET_WORDS)


def mask_kafka_config(config: dict[str, Any]) -> dict[str, Any]:
    """Pure. ``config`` with every secret value masked: for logs, errors and ``config show``."""
    return {k: "********" if is_secret(k) else v for k, v in config.items()}


def effective(settings: Settings) -> dict[str, Any]:
    """Every setting's effective value, secrets masked (``replicator config show``)."""
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = mask_dsn(value.get_secret_value())
        elif name == "kafka_config":
            value = mask_kafka_config(value)
        out[name] = value
    out["dlq_topic"] = settings.dead_letter_topic  # the effective one, not "None"
    out["versions_table"] = settings.versions_table
    return out


def default_env_file() -> Path | None:
    """The env file named by ``REPLICATOR_ENV_FILE`` (None: none named)."""
    explicit = os.environ.get("REPLICATOR_ENV_FILE")
    return Path(explicit) if explicit else None


def local_stack_env_file() -> Path | None:
    """The local stack's settings (``$REPLICATOR_STACK_DIR/stack.env``), when present: the
    default env file of the local stack's own commands only."""
    stack_dir = Path(os.environ.get("REPLICATOR_STACK_DIR", DEFAULT_STACK_DIR))
    candidate = stack_dir / "stack.env"
    return candidate if candidate.exists() else None


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read env file {path}: {exc.strerror}") from exc
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def load_settings(
    env_file: Path | None = None, *, local: bool = False, **overrides: Any
) -> Settings:
    """Build and validate the settings; ``overrides`` are the command's flags (None = unset).
    ``local``: a local stack's command, which also falls back on the stack's env file.

    A bad value raises :class:`ConfigurationError` naming where it came from: the flag,
    the environment variable or the env file."""
    file_values: dict[str, Any] = {}
    path = env_file or default_env_file() or (local_stack_env_file() if local else None)
    if path is not None:
        for key, value in read_env_file(path).items():
            if key.startswith("REPLICATOR_"):
                name = key.removeprefix("REPLICATOR_").lower()
                if name in Settings.model_fields and key not in os.environ:
                    file_values[name] = _from_file(name, value, path)
    given = {k: v for k, v in overrides.items() if v is not None}
    sources = Sources(flags=set(overrides), given=set(given), file=path, in_file=set(file_values))
    try:
        return Settings(**{**file_values, **given})
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc, sources)) from exc
    except SettingsError as exc:  # an environment value that is not valid JSON
        match = re.search(r'field "(\w+)"', str(exc))
        field = match.group(1) if match else "a setting"
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise ConfigurationError(
            f"invalid settings: {field}: REPLICATOR_{field.upper()} is not valid JSON{cause};"
            ' give an object such as {"security.protocol": "SASL_SSL", "fetch.wait.max.ms": 20}'
        ) from exc


def _from_file(name: str, value: str, path: Path) -> Any:
    """An env file's value; JSON settings are parsed as the environment's are."""
    if name != "kafka_config":
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ConfigurationError(
            f"invalid settings: REPLICATOR_KAFKA_CONFIG in {path} is not valid JSON ({exc})"
        ) from exc


@dataclass(frozen=True)
class Sources:
    """Where each setting could come from: ``flags`` the command has, the ones ``given``,
    the env ``file`` and the settings found ``in_file``."""

    flags: set[str] = field(default_factory=set)
    given: set[str] = field(default_factory=set)
    file: Path | None = None
    in_file: set[str] = field(default_factory=set)

    def where(self, name: str) -> str:
        env = f"REPLICATOR_{name.upper()}"
        if name in self.given:
            return f"--{name.replace('_', '-')}"
        if name in self.in_file:
            return f"{env} in {self.file}"
        return env

    def how_to_set(self, name: str) -> str:
        env = f"REPLICATOR_{name.upper()}"
        flag = f" or --{name.replace('_', '-')}" if name in self.flags else ""
        return f"set {env} (environment or env file){flag}"


def _masked(value: Any) -> Any:
    return mask_kafka_config(value) if isinstance(value, dict) else value


def describe_validation_error(exc: ValidationError, sources: Sources | None = None) -> str:
    sources = sources or Sources()
    lines = ["invalid settings:"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        name = loc[0] if loc else "settings"
        what = name + "".join(f"[{p!r}]" for p in loc[1:2])
        if len(loc) > 2:  # one member of a union: say it once, for the whole value
            err = {**err, "msg": "must be a string, a number or a boolean"}
        if err["type"] == "missing":
            lines.append(f"  {name}: missing; {sources.how_to_set(name)}")
            stack_env = local_stack_env_file()
            if sources.file is None and stack_env is not None and len(lines) == 2:
                lines.append(
                    f"  (the local stack's settings are in {stack_env}: name it with --env-file"
                    " or REPLICATOR_ENV_FILE; production commands do not read it by themselves)"
                )
        else:
            shown = err.get("input")
            if "dsn" in name or "password" in name:
                shown = "<hidden>"
            elif name == "kafka_config":
                secret = len(loc) > 1 and mask_kafka_config({loc[1]: 0}) != {loc[1]: 0}
                shown = "<hidden>" if secret else _masked(shown)
            line = f"  {what}={shown!r}: {err['msg']} (set via {sources.where(name)})"
            if line not in lines:
                lines.append(line)
    return "\n".join(lines)
