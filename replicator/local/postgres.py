"""The local stack's PostgreSQL cluster: initdb, start, stop, restart, readiness.

Debian's binaries (``REPLICATOR_PG_BIN``, default ``/usr/lib/postgresql/15/bin``); the
cluster trusts local TCP connections and runs with logical decoding.  initdb and pg_ctl
refuse to run as root: as root they run as the ``postgres`` OS user.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from replicator.errors import StackError
from replicator.local.processes import pid_alive, wait_for

PG_BIN = Path(os.environ.get("REPLICATOR_PG_BIN", "/usr/lib/postgresql/15/bin"))
SETTINGS = (
    "-c listen_addresses=127.0.0.1",
    "-c wal_level=logical",
    "-c max_replication_slots=10",
    "-c max_wal_senders=10",
    "-c max_connections=200",
    "-c fsync=on",
    "-c shared_buffers=256MB",
)


class LocalPostgres:
    """The cluster under ``root`` (``root/data``, sockets in ``root/run``), on ``port``."""

    def __init__(self, root: Path, port: int, logfile: Path, log: Callable[[str], None]) -> None:
        self.data = root / "data"
        self.socket_dir = root / "run"
        self.port = port
        self.logfile = logfile
        self.log = log

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return pid_alive(self.postmaster_pid(), str(self.data))

    def ready(self) -> bool:
        res = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
            timeout=10,
        )
        return res.returncode == 0

    def start(self) -> int | None:
        """initdb when needed, then start unless running; the postmaster's pid."""
        if not (PG_BIN / "initdb").exists():
            raise StackError(
                f"postgresql: {PG_BIN / 'initdb'} not found; install Debian's postgresql "
                "package (apt-get install postgresql) or set REPLICATOR_PG_BIN"
            )
        self._prepare_folders()
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        if self.running() and self.ready():
            return self.postmaster_pid()
        self.log(f"postgresql: starting on port {self.port}")
        options = " ".join([f"-p {self.port}", f"-k {self.socket_dir}", *SETTINGS])
        # after a crash of the postmaster alone, its backends exit on their own within
        # seconds; until then they hold the shared memory and a new postmaster refuses
        deadline = time.monotonic() + 30
        while True:
            res = self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.logfile), "-o", options)
            if res.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        if res.returncode != 0 or not wait_for(self.ready, 30):
            raise StackError(
                f"postgresql did not start (port {self.port}): "
                f"{(res.stderr or res.stdout).strip()}; see {self.logfile}"
            )
        return self.postmaster_pid()

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-m", mode, "-w", "-t", "60")

    def restart(self, mode: str = "fast") -> int | None:
        """Restart with the options it was started with (``mode``: fast, immediate)."""
        res = self._pg_ctl("restart", "-m", mode, "-w", "-t", "60", "-l", str(self.logfile))
        if res.returncode != 0:
            raise StackError(
                f"postgresql did not restart: {res.stderr.strip()}; see {self.logfile}"
            )
        return self.postmaster_pid()

    def _prepare_folders(self) -> None:
        root = self.data.parent
        root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        for path in (root, self.socket_dir):
            _chown_to_postgres(path)
        self.logfile.touch()
        _chown_to_postgres(self.logfile)
        # the postgres user must be able to reach its folders inside the state folder
        for parent in root.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def _initdb(self) -> None:
        self.log("postgresql: initdb")
        res = subprocess.run(
            [
                *_as_postgres(),
                str(PG_BIN / "initdb"),
                *("-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"),
                "--locale=C",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if res.returncode != 0:
            raise StackError(f"postgresql: initdb failed: {res.stderr.strip()}")

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_as_postgres(), str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _chown_to_postgres(path: Path) -> None:
    pw = pwd.getpwnam("postgres")
    os.chown(path, pw.pw_uid, pw.pw_gid)
