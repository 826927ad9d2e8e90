"""What production does to a pipeline, each on a stack of its own, as an operator runs it:
the CLI against ``stack up``/``stack down``, and the target compared with the source."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from replicator.settings import read_env_file
from tests.integration.conftest import diff, mapped_source, target_rows

pytestmark = pytest.mark.integration

Cli = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def own_stack() -> Iterator[tuple[Cli, Path]]:
    """A stack of its own (it is restarted), driven through the CLI; stopped afterwards."""
    home = Path(tempfile.mkdtemp(prefix="replicator-faults-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    env["REPLICATOR_STACK_DIR"] = str(home / "state")

    def cli(*argv: str, timeout: float = 300, ok: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [sys.executable, "-m", "replicator", *argv],
            cwd=home,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if ok:
            assert res.returncode == 0, f"replicator {' '.join(argv)}:\n{res.stdout}\n{res.stderr}"
        return res

    try:
        yield cli, home / "state"
    finally:
        cli("stack", "down", ok=False)
        shutil.rmtree(home, ignore_errors=True)


def test_a_broker_that_restarts_empty_loses_nothing(own_stack: tuple[Cli, Path]) -> None:
    cli, state = own_stack
    cli("stack", "up")
    cli("sample", "--rows", "2000")
    settings = read_env_file(state / "stack.env")
    source, target = (
        settings["REPLICATOR_ADMIN_SOURCE_DSN"],
        settings["REPLICATOR_ADMIN_TARGET_DSN"],
    )
    with psycopg.connect(source, autocommit=True) as conn:  # every row streamed once more
        conn.execute("UPDATE workflow_processes SET max_turns = coalesce(max_turns, 0) + 1")
    cli("run", "--exit-when-idle", "8", "--log-format", "human")
    assert len(target_rows(target, "workflow_runs")) == 2000

    # the local broker keeps its topics in memory: down/up re-creates them empty, and
    # Debezium re-snapshots into the new topic, whose offsets start again from 0
    cli("stack", "down")
    cli("stack", "up")
    cli("sample", "--rows", "2000", "--start", "2000")
    run = cli("run", "--exit-when-idle", "10", "--log-format", "human")
    assert "stored position set aside" in run.stderr, run.stderr[-3000:]
    expected, actual = mapped_source(source), target_rows(target, "workflow_runs")
    assert len(expected) == 4000
    assert expected == actual, diff(expected, actual)
    assert "in sync" in cli("verify").stdout
