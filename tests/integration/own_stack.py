"""A stack of its own for the tests that break it (kill its parts, restart the broker
empty, cut the legacy table over and roll it back), driven through the CLI as an
operator drives it.  One per session (``own_stack`` in conftest.py): every test leaves
it up and the target equal to the source; ``cutover --finalize`` ends it, so the test
that finalizes runs last (tests/integration/test_migration_cutover.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from replicator.settings import read_env_file
from tests.integration.conftest import apache_kafka_rules, diff, mapped_source, target_rows


@dataclasses.dataclass
class OwnStack:
    """A stack of its own (its parts are killed and restarted), driven through the CLI."""

    home: Path
    env: dict[str, str]

    def cli(
        self, *argv: str, timeout: float = 300, ok: bool = True, **env: str
    ) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [sys.executable, "-m", "replicator", *argv],
            cwd=self.home,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if ok:
            assert res.returncode == 0, f"replicator {' '.join(argv)}:\n{res.stdout}\n{res.stderr}"
        return res

    def spawn_run(self, metrics_port: int) -> subprocess.Popen:
        """``replicator run`` as the operator starts it, logging to a file."""
        log = (self.home / "run.log").open("w")
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "replicator", "run", "--log-format", "human"),
                *("--metrics-port", str(metrics_port)),
            ],
            cwd=self.home,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    @property
    def settings(self) -> dict[str, str]:
        return read_env_file(self.home / "state" / "stack.env")

    def pid(self, part: str) -> int:
        status = json.loads(self.cli("stack", "status", "--json", ok=False).stdout)
        return int(status["parts"][part]["pid"])


@contextmanager
def started_own_stack() -> Iterator[OwnStack]:
    """A stack of its own with 500 sample rows (wp-00000000..), stopped afterwards."""
    home = Path(tempfile.mkdtemp(prefix="replicator-faults-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    env["REPLICATOR_STACK_DIR"] = str(home / "state")
    env["REPLICATOR_ENV_FILE"] = str(home / "state" / "stack.env")  # named, as an operator must
    own = OwnStack(home, env)
    try:
        own.cli("stack", "up")
        own.cli("sample", "--rows", "500")  # wp-00000000.., what the writer changes
        yield own
        apache_kafka_rules(own.settings["REPLICATOR_KAFKA_BOOTSTRAP"])
    finally:
        own.cli("stack", "down", ok=False)
        shutil.rmtree(home, ignore_errors=True)


def converged(own: OwnStack, timeout: float = 120.0) -> None:
    """Wait until workflow_runs equals the mapped workflow_processes, every column."""
    source, target = (
        own.settings["REPLICATOR_ADMIN_SOURCE_DSN"],
        own.settings["REPLICATOR_ADMIN_TARGET_DSN"],
    )
    deadline = time.monotonic() + timeout
    while True:
        expected, actual = mapped_source(source), target_rows(target, "workflow_runs")
        if expected == actual:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the target did not converge:\n{diff(expected, actual)}")
        time.sleep(1)


def wait_for(what: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)
