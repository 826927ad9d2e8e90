"""The local stack: PostgreSQL, a Kafka-compatible broker and Kafka Connect with Debezium,
run as plain processes under one state folder (no Docker engine needed).

Invariants:

* Everything ``up`` starts is recorded in ``<state>/stack.json`` (process ids and the
  command line marker of each), and ``down`` stops exactly those processes, checking
  that a recorded pid still runs the same program before signalling it.
* ``up`` is idempotent: parts already running are left alone; ports, once chosen, are
  kept for the life of the state folder.
* When a part does not come up, :class:`~replicator.errors.StackError` names the part
  and its log file.

The parts: :mod:`~replicator.local.postgres`, the broker (``tansu``), the Kafka Connect
worker (:mod:`~replicator.local.worker`); binaries from packages
(:mod:`~replicator.local.binaries`), processes by recorded pid
(:mod:`~replicator.local.processes`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from replicator.clients.connect import ConnectClient, load_connector_file
from replicator.cutover import leftovers
from replicator.cutover.guard import closed_by, describe
from replicator.cutover.objects import Record
from replicator.errors import ReplicatorError, StackError
from replicator.local.binaries import default_cache_dir, tansu_binary
from replicator.local.extensions import enable_extensions
from replicator.local.postgres import LocalPostgres
from replicator.local.processes import free_port, pid_alive, port_open, spawn, stop_pid, wait_for
from replicator.local.worker import MARKER as CONNECT_MARKER
from replicator.local.worker import rest_ready, start_worker
from replicator.settings import load_settings

DATABASE = "workflows"
TARGET_DATABASE = "workflows_target"
#: Roles (schemas/roles.sql): Debezium's and the replicator's least-privilege roles, and the
#: tables' owner (the cluster's superuser here).  The local cluster trusts local TCP
#: connections, so no passwords are involved; production sets them (roles.sql's header).
DEBEZIUM_ROLE = "replicator_debezium"
SERVICE_ROLE = "replicator_app"
OWNER_ROLE = "postgres"
TOPIC_PARTITIONS = 4


@dataclass
class Part:
    """One process of the stack, as recorded in ``stack.json``."""

    name: str
    pid: int | None = None
    port: int | None = None
    log: str = ""


@dataclass
class StackState:
    pg: Part = field(default_factory=lambda: Part("postgresql"))
    broker: Part = field(default_factory=lambda: Part("broker"))
    connect: Part = field(default_factory=lambda: Part("kafka-connect"))
    separate_target: bool = False

    @classmethod
    def load(cls, path: Path) -> StackState:
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        return cls(
            pg=Part(**raw["pg"]),
            broker=Part(**raw["broker"]),
            connect=Part(**raw["connect"]),
            separate_target=bool(raw.get("separate_target", False)),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


class LocalStack:
    """Start, inspect and stop the local stack kept under ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        *,
        cache_dir: Path | None = None,
        separate_target: bool = False,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.cache_dir = (cache_dir or default_cache_dir()).resolve()
        self.log = log
        self._state_file = self.state_dir / "stack.json"
        self.state = StackState.load(self._state_file)
        if not self._state_file.exists():
            self.state.separate_target = separate_target
        self.env_file = self.state_dir / "stack.env"

    # ---- paths and parts ---------------------------------------------------------

    @property
    def pg(self) -> LocalPostgres:
        return LocalPostgres(
            self.state_dir / "pg", self.state.pg.port or 0, self._logfile("postgresql"), self.log
        )

    @property
    def pg_data(self) -> Path:
        return self.pg.data

    @property
    def connect_url(self) -> str:
        return f"http://127.0.0.1:{self.state.connect.port}"

    def _logfile(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    # ---- public ------------------------------------------------------------------

    def up(self) -> dict[str, str]:
        """Bring every part up (idempotently) and return the connection settings."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        for part in (self.state.pg, self.state.broker, self.state.connect):
            if part.port is None:
                part.port = free_port()
        self.state.save(self._state_file)

        self.start_postgres()
        self._databases_up()
        self._broker_up()
        self._connect_up()
        settings = self.connection_settings()
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        closed = self._closed_by_cutover()
        if closed is None:
            self._register_connector(settings["REPLICATOR_CONNECT_URL"])
        else:  # registering it again would stream from a view, or re-create a dropped slot
            self.log(f"connector: not registered: {describe(closed)}")
        return settings

    def down(self) -> list[str]:
        """Stop exactly the processes ``up`` started; return what was stopped."""
        stopped: list[str] = []
        connect, broker = self.state.connect, self.state.broker
        if stop_pid(connect.pid, CONNECT_MARKER):
            stopped.append(f"kafka-connect (pid {connect.pid})")
        if stop_pid(broker.pid, "tansu"):
            stopped.append(f"broker (pid {broker.pid})")
        pg = self.pg
        pg_pid = pg.postmaster_pid()
        if pg.running():
            pg.stop("fast")
            if wait_for(lambda: not pid_alive(pg_pid, str(pg.data)), 30):
                stopped.append(f"postgresql (pid {pg_pid})")
            else:
                stop_pid(pg_pid, str(pg.data))
                stopped.append(f"postgresql (pid {pg_pid}, killed)")
        connect.pid = broker.pid = self.state.pg.pid = None
        if self._state_file.exists():
            self.state.save(self._state_file)
        return stopped

    def destroy(self) -> None:
        """Stop everything and delete the state folder (data, logs, settings)."""
        self.down()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def status(self) -> dict[str, dict[str, object]]:
        """Each part's health, and the connector's and its task's state."""
        pg = self.pg
        parts: dict[str, dict[str, object]] = {
            "postgresql": {
                "pid": pg.postmaster_pid(),
                "port": self.state.pg.port,
                "healthy": pg.running() and pg.ready(),
                "log": str(self._logfile("postgresql")),
            },
            "broker": {
                "pid": self.state.broker.pid,
                "port": self.state.broker.port,
                "healthy": pid_alive(self.state.broker.pid, "tansu")
                and port_open(self.state.broker.port or 0),
                "log": str(self._logfile("broker")),
            },
            "kafka-connect": {
                "pid": self.state.connect.pid,
                "port": self.state.connect.port,
                "healthy": pid_alive(self.state.connect.pid, CONNECT_MARKER)
                and rest_ready(self.connect_url),
                "log": str(self._logfile("kafka-connect")),
            },
        }
        closed = self._closed_by_cutover() if parts["postgresql"]["healthy"] else None
        if closed is not None:
            parts["connector"] = self._connector_after(closed)
        elif parts["kafka-connect"]["healthy"]:
            parts["connector"] = self._connector_status(bool(parts["postgresql"]["healthy"]))
        else:
            parts["connector"] = {"healthy": False}
        return parts

    def _closed_by_cutover(self) -> Record | None:
        """The cutover that closed the stream (None: it streams, or its state is unknown)."""
        try:
            return closed_by(self.connection_settings()["REPLICATOR_ADMIN_TARGET_DSN"])
        except ReplicatorError:
            return None

    def _connector_after(self, closed: Record) -> dict[str, object]:
        """After a cutover the connector is gone by design: healthy when it, its slot (and
        after the finalize its publication) are gone, read from where they live."""
        name = load_connector_file()["name"]
        try:
            left = leftovers.found(load_settings(self.env_file), closed)
        except ReplicatorError as exc:  # a status report never raises
            left = [f"unknown: cannot read what the cutover left ({exc})"]
        if left:
            return {"name": name, "state": leftovers.summary(left), "healthy": False}
        return {"name": name, "state": f"not registered, by design (no slot left):"
                f" {describe(closed)}", "healthy": True}  # fmt: skip

    def _connector_status(self, database_up: bool = True) -> dict[str, object]:
        """Kafka Connect's word for the connector and its tasks; with the database down it
        is unknown (Debezium's task retries a lost connection and still says RUNNING,
        though it streams nothing)."""
        name = load_connector_file()["name"]
        try:
            st = ConnectClient(self.connect_url).status(name)
        except Exception as exc:  # a status report never raises
            return {"name": name, "state": f"unknown ({exc})", "healthy": False}
        tasks = st.get("tasks", [])
        if not database_up:
            return {
                "name": name,
                "state": "unknown: PostgreSQL is down, nothing can stream (Kafka Connect says"
                f" {st['connector']['state']})",
                "tasks": [t["state"] for t in tasks],
                "healthy": False,
            }
        return {
            "name": name,
            "state": st["connector"]["state"],
            "tasks": [t["state"] for t in tasks],
            "healthy": st["connector"]["state"] == "RUNNING"
            and bool(tasks)
            and all(t["state"] == "RUNNING" for t in tasks),
        }

    def connection_settings(self) -> dict[str, str]:
        pg = self.state.pg.port
        target_db = TARGET_DATABASE if self.state.separate_target else DATABASE
        source = f"127.0.0.1:{pg}/{DATABASE}"
        target = f"127.0.0.1:{pg}/{target_db}"
        return {
            # the service's least-privilege role (schemas/roles.sql) ...
            "REPLICATOR_SOURCE_DSN": f"postgresql://{SERVICE_ROLE}@{source}",
            "REPLICATOR_TARGET_DSN": f"postgresql://{SERVICE_ROLE}@{target}",
            # ... and the tables' owner, for schema apply, sample, backfill and replay
            "REPLICATOR_ADMIN_SOURCE_DSN": f"postgresql://{OWNER_ROLE}@{source}",
            "REPLICATOR_ADMIN_TARGET_DSN": f"postgresql://{OWNER_ROLE}@{target}",
            "REPLICATOR_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.state.broker.port}",
            "REPLICATOR_CONNECT_URL": self.connect_url,
            "REPLICATOR_TOPIC": topic_name(),
        }

    # ---- the parts ---------------------------------------------------------------

    def start_postgres(self) -> None:
        self.state.pg.pid = self.pg.start()
        self.state.pg.log = str(self._logfile("postgresql"))
        self.state.save(self._state_file)

    def stop_postgres(self, mode: str = "fast") -> None:
        """Stop the cluster (tests use it to take the target away); ``up`` starts it again."""
        self.pg.stop(mode)

    def restart_postgres(self, mode: str = "fast") -> None:
        """Restart the cluster with the options it was started with (``mode``: fast, immediate)."""
        self.state.pg.pid = self.pg.restart(mode)
        self.state.save(self._state_file)

    def _databases_up(self) -> None:
        from replicator.db.connect import connect
        from replicator.db.schema import apply_roles, apply_source_schema, apply_target_schema

        admin = f"postgresql://{OWNER_ROLE}@127.0.0.1:{self.state.pg.port}/postgres"
        wanted = [DATABASE] + ([TARGET_DATABASE] if self.state.separate_target else [])
        with connect(admin, "the local cluster") as conn:
            have = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            for name in wanted:
                if name not in have:
                    self.log(f"postgresql: creating database {name}")
                    conn.execute(f'CREATE DATABASE "{name}"')
        settings = self.connection_settings()
        source, target = (
            settings["REPLICATOR_ADMIN_SOURCE_DSN"],
            settings["REPLICATOR_ADMIN_TARGET_DSN"],
        )
        lines = [*apply_source_schema(source), *apply_target_schema(target)]
        for line in [*lines, *apply_roles(source, target)]:
            self.log(f"schema: {line}")
        template1 = f"postgresql://{OWNER_ROLE}@127.0.0.1:{self.state.pg.port}/template1"
        enable_extensions([template1, source, target], self.log)

    def _broker_up(self) -> None:
        part = self.state.broker
        if pid_alive(part.pid, "tansu") and port_open(part.port or 0):
            return
        binary = tansu_binary()
        logfile = self._logfile("broker")
        url = f"tcp://127.0.0.1:{part.port}"
        self.log(f"broker: starting tansu on port {part.port}")
        part.pid = spawn(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            logfile,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        part.log = str(logfile)
        self.state.save(self._state_file)  # recorded before waiting: `down` can stop it
        if not wait_for(lambda: port_open(part.port or 0), 20):
            raise StackError(f"broker did not open port {part.port}; see {logfile}")

    def _connect_up(self) -> None:
        part = self.state.connect
        if pid_alive(part.pid, CONNECT_MARKER) and rest_ready(self.connect_url):
            return
        logfile = self._logfile("kafka-connect")
        self.log(f"kafka-connect: starting the worker on port {part.port}")
        part.pid = start_worker(
            self.state_dir / "connect",
            self.cache_dir,
            self.state.broker.port or 0,
            part.port or 0,
            logfile,
            env={**os.environ, **self._debezium_env()},
        )
        part.log = str(logfile)
        self.state.save(self._state_file)  # recorded before waiting: `down` can stop it
        if not wait_for(lambda: rest_ready(self.connect_url), 120, interval=0.5):
            alive = pid_alive(part.pid, CONNECT_MARKER)
            raise StackError(
                f"kafka-connect {'did not answer' if alive else 'exited'} on "
                f"{self.connect_url}; see {logfile}"
            )

    def _debezium_env(self) -> dict[str, str]:
        """What the connector config's ``${env:...}`` placeholders resolve to in the worker."""
        return {
            "DBZ_PG_HOST": "127.0.0.1",
            "DBZ_PG_PORT": str(self.state.pg.port),
            "DBZ_PG_USER": DEBEZIUM_ROLE,
            "DBZ_PG_PASSWORD": "",
            "DBZ_PG_DATABASE": DATABASE,
            "DBZ_TOPIC_REPLICATION_FACTOR": "1",
            "DBZ_TOPIC_PARTITIONS": str(TOPIC_PARTITIONS),
        }

    def _register_connector(self, url: str) -> None:

        spec = load_connector_file()
        client = ConnectClient(url)
        try:
            client.apply(spec["name"], spec["config"], timeout=60)
        except Exception as exc:
            raise StackError(
                f"connector {spec['name']} did not reach RUNNING: {exc}; "
                f"see {self._logfile('kafka-connect')}"
            ) from exc
        self.log(f"connector: {spec['name']} RUNNING")


def topic_name() -> str:
    """The connector's change topic: ``<topic.prefix>.public.workflow_processes``."""
    return f"{load_connector_file()['config']['topic.prefix']}.public.workflow_processes"
