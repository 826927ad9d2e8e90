"""Kafka Connect: a small client for its REST API (the calls the replicator needs), and
the connector configuration (``connectors/workflow-processes.json``, the one source of it).

Production commands (cutover, rollback, resnapshot, ``connector``) talk to the team's own
Connect cluster through this module; the local stack uses it too."""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from replicator.clients.kafka import EVENT_MAX_BYTES
from replicator.errors import ConfigurationError, ConnectBusy, ConnectError
from replicator.resources import connector_file
from replicator.settings import is_secret

T = TypeVar("T")

#: How many times :meth:`ConnectClient.wait_running` restarts a FAILED task.
FAILED_TASK_RESTARTS = 3


def mask_config(config: dict[str, str]) -> dict[str, str]:
    """The config with secret values replaced (placeholders like ``${env:X}`` are kept)."""
    out = {}
    for key, value in config.items():
        out[key] = value if not is_secret(key) or str(value).startswith("${") else "********"
    return out


class ConnectClient:
    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("message", detail)
            busy = exc.code == 409 or exc.code >= 500
            raise (ConnectBusy if busy else ConnectError)(
                f"{method} {path}: HTTP {exc.code}: {detail}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectBusy(f"Kafka Connect at {self.url} is unreachable: {exc}") from exc
        return json.loads(raw) if raw else None

    def put_config(self, name: str, config: dict[str, str]) -> dict[str, Any]:
        return dict(self._call("PUT", f"/connectors/{name}/config", config))

    def get_config(self, name: str) -> dict[str, str]:
        return dict(self._call("GET", f"/connectors/{name}/config"))

    def status(self, name: str) -> dict[str, Any]:
        """The connector's and its tasks' state; :class:`ConnectError` when it is not
        registered (Connect may still answer a status for a connector just deleted)."""
        if name not in self.names():
            raise ConnectError(
                f"connector {name} is not registered with Kafka Connect at {self.url};"
                " register it with `replicator connector apply`"
            )
        return dict(self._call("GET", f"/connectors/{name}/status"))

    def names(self) -> list[str]:
        return list(self._call("GET", "/connectors") or [])

    def restart(self, name: str, only_failed: bool = False) -> None:
        flag = "true" if only_failed else "false"
        self._call("POST", f"/connectors/{name}/restart?includeTasks=true&onlyFailed={flag}")

    def apply(self, name: str, config: dict[str, str], timeout: float = 60.0) -> dict[str, Any]:
        """Write ``config`` and bring the connector to RUNNING; its settled status.

        Writing a config leaves a STOPPED or PAUSED connector as it was, and a stop is
        what an interrupted ``--resnapshot`` leaves behind: a connector the operator
        applies is meant to run, so one that was registered is resumed (its stored
        offsets are kept; resuming a running connector does nothing).  Always, not after
        reading its state: right after a config is written Connect may still report the
        state before it."""
        deadline = time.monotonic() + timeout
        registered = self._until(deadline, lambda: name in self.names())
        self._until(deadline, lambda: self.put_config(name, config))
        if registered:
            self._until(deadline, lambda: self.resume(name))
        return self.wait_running(name, max(deadline - time.monotonic(), 1.0))

    @staticmethod
    def _until(deadline: float, call: Callable[[], T]) -> T:
        """``call``, again while Connect is busy (a worker joining its group) until
        ``deadline``; then the last error."""
        while True:
            try:
                return call()
            except ConnectBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)

    def pause(self, name: str) -> None:
        self._call("PUT", f"/connectors/{name}/pause")

    def resume(self, name: str) -> None:
        self._call("PUT", f"/connectors/{name}/resume")

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/connectors/{name}")

    def create_stopped(self, name: str, config: dict[str, str]) -> None:
        """Register the connector without starting it (its offsets can then be reset)."""
        self._call(
            "POST", "/connectors", {"name": name, "config": config, "initial_state": "STOPPED"}
        )

    def stop(self, name: str, timeout: float = 60.0) -> None:
        """Stop the connector and wait until its tasks are gone (their records flushed)."""
        self._call("PUT", f"/connectors/{name}/stop")
        deadline = time.monotonic() + timeout
        while True:
            status = self._call("GET", f"/connectors/{name}/status")
            if status.get("connector", {}).get("state") == "STOPPED" and not status.get("tasks"):
                return
            if time.monotonic() > deadline:
                raise ConnectError(f"connector {name} not STOPPED after {timeout:.0f}s: {status}")
            time.sleep(0.5)

    def offsets(self, name: str) -> list[dict[str, Any]]:
        """The source offsets Connect committed for the connector (records the broker
        acknowledged, in order)."""
        return list((self._call("GET", f"/connectors/{name}/offsets") or {}).get("offsets", []))

    def reset_offsets(self, name: str) -> None:
        """Forget the connector's committed source offsets (it must be STOPPED)."""
        self._call("DELETE", f"/connectors/{name}/offsets")

    def wait_running(self, name: str, timeout: float = 60.0, settle: float = 1.5) -> dict[str, Any]:
        """Wait until the connector and all its tasks have been RUNNING for ``settle``
        seconds on end, and return that status.

        One RUNNING answer is not enough: right after a config is written, Connect may
        still report the previous start, then rebalance and show the connector
        UNASSIGNED for a moment. A state that held across polls for ``settle`` seconds
        is the one the caller can report.

        A task that FAILED is restarted, up to :data:`FAILED_TASK_RESTARTS` times with a
        growing pause, then raises with its trace. Connect never restarts a failed task
        itself, and a task fails when it starts while its database is still coming up
        ("Couldn't obtain encoding for database"): one restart is then all it needs. A
        task that fails for good (a wrong password) fails each restart, and the bound
        reports it within seconds rather than at the timeout."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        since: float | None = None
        restarts = 0
        while time.monotonic() < deadline:
            try:
                last = self.status(name)
            except ConnectError:
                since = None
                time.sleep(0.5)
                continue
            tasks = last.get("tasks", [])
            failed = [t for t in tasks if t.get("state") == "FAILED"]
            if failed:
                trace = " ".join((failed[0].get("trace") or "").splitlines()[:3])
                if restarts == FAILED_TASK_RESTARTS or time.monotonic() >= deadline:
                    raise ConnectError(
                        f"task {failed[0].get('id')} FAILED (restarted {restarts} times): {trace}"
                    )
                restarts += 1
                self.restart(name, only_failed=True)
                since = None
                time.sleep(2.0 * restarts)
                continue
            running = (
                last.get("connector", {}).get("state") == "RUNNING"
                and tasks
                and all(t.get("state") == "RUNNING" for t in tasks)
            )
            now = time.monotonic()
            if not running:
                since = None
            elif since is None:
                since = now
            elif now - since >= settle:
                return last
            time.sleep(0.5)
        raise ConnectError(f"connector {name} not RUNNING after {timeout:.0f}s: {last}")


def snapshot_done(offsets: list[dict[str, Any]]) -> bool:
    """Pure. Connect's committed offsets of a Debezium PostgreSQL connector are past its
    initial snapshot (the last snapshot record, or a streamed one)."""
    if not offsets:
        return False
    for entry in offsets:
        offset = entry.get("offset") or {}
        if not (
            "snapshot" not in offset
            or offset.get("snapshot_completed") is True
            or offset.get("last_snapshot_record") is True
        ):
            return False
    return True


def load_connector_file(path: Path | None = None) -> dict[str, Any]:
    """The connector config (default: the bundled ``connectors/workflow-processes.json``)."""
    path = path or connector_file()
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"cannot read the connector config {path}: {exc}") from exc
    if not isinstance(spec, dict) or "name" not in spec or "config" not in spec:
        raise ConfigurationError(f"{path} must be an object with 'name' and 'config'")
    problems = kafka_rule_problems(spec["config"])
    if problems:
        raise ConfigurationError(
            f"{path} would stop or lose events on Apache Kafka: " + "; ".join(problems)
        )
    return spec


#: Kafka's defaults where a connector config sets nothing: the producer's
#: ``max.request.size``, the broker's ``message.max.bytes`` (a topic's
#: ``max.message.bytes``), the producer's ``delivery.timeout.ms``.
KAFKA_DEFAULTS = {
    "max.request.size": 1_048_576,
    "max.message.bytes": 1_048_588,
    "delivery.timeout.ms": 120_000,
}
#: ``delivery.timeout.ms`` that never expires a record the broker cannot take yet.
NEVER = 2_147_483_647


def change_topic_config(config: dict[str, str]) -> dict[str, str]:
    """Pure. The settings Kafka Connect creates the change topic with: those of the first
    ``topic.creation.groups`` group whose ``include`` matches it (which takes only the
    replication factor and partitions from the default group), else the default group's."""
    topic = f"{config.get('topic.prefix', '')}.public.workflow_processes"
    group = "default"
    groups = (g.strip() for g in config.get("topic.creation.groups", "").split(","))
    for name in filter(None, groups):
        include = config.get(f"topic.creation.{name}.include", "")
        if any(re.fullmatch(p.strip(), topic) for p in include.split(",") if p.strip()):
            group = name
            break
    prefix = f"topic.creation.{group}."
    own = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    default = "topic.creation.default."
    inherited = {k[len(default) :]: v for k, v in config.items() if k.startswith(default)}
    if group != "default":
        kept = ("replication.factor", "partitions")
        inherited = {k: v for k, v in inherited.items() if k in kept}
    return {**inherited, **own}


def kafka_rule_problems(config: dict[str, str]) -> list[str]:
    """Pure. Why the connector ``config`` would stop, or skip events silently, on Apache
    Kafka, whose broker enforces what the local stack's does not
    (docs/explanation/apache-kafka.md); [] when nothing would.

    * Debezium's TRUNCATE event has no key, and Apache Kafka refuses a keyless record on a
      compacted topic: the task fails and the slot keeps WAL.
    * The producer must refuse an event before the topic does, and a dead letter must be
      able to carry any event whole (``EVENT_MAX_BYTES``).
    * Skipping what the broker refuses (``errors.tolerance=all``) is safe only if nothing
      retriable is ever given up: an outage longer than ``delivery.timeout.ms`` would
      otherwise skip every event sent meanwhile."""
    problems = []
    topic = change_topic_config(config)
    policy = {p.strip() for p in topic.get("cleanup.policy", "delete").split(",")}
    skipped = {op.strip() for op in config.get("skipped.operations", "t").split(",")}
    if "compact" in policy and "t" not in skipped:
        problems.append(
            "truncate events (skipped.operations does not include t) have no key and the"
            " change topic is compacted (cleanup.policy includes compact): Apache Kafka refuses"
            " them and the connector's task fails; create the topic with cleanup.policy=delete"
        )

    def number(value: str | None, default_of: str) -> int:
        try:
            return int(value) if value else KAFKA_DEFAULTS[default_of]
        except ValueError:
            problems.append(f"{default_of} {value!r} is not a number")
            return KAFKA_DEFAULTS[default_of]

    request = number(config.get("producer.override.max.request.size"), "max.request.size")
    accepted = number(topic.get("max.message.bytes"), "max.message.bytes")
    if request > accepted:
        problems.append(
            f"the producer sends events of up to {request} bytes (max.request.size) that the"
            f" change topic refuses above {accepted} (max.message.bytes)"
        )
    if request > EVENT_MAX_BYTES:
        problems.append(
            f"events of up to {request} bytes (max.request.size) are larger than the"
            f" {EVENT_MAX_BYTES} bytes a dead letter carries whole"
        )
    tolerance = config.get("errors.tolerance", "none")
    timeout = number(config.get("producer.override.delivery.timeout.ms"), "delivery.timeout.ms")
    if tolerance == "all" and timeout != NEVER:
        problems.append(
            "errors.tolerance=all skips every event the producer gives up on: with"
            f" delivery.timeout.ms {timeout}, a broker outage that long skips events; set"
            f" producer.override.delivery.timeout.ms to {NEVER}"
        )
    return problems
