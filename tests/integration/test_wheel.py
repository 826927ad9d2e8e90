"""The product installed from its wheel, in a fresh virtualenv, run from an empty folder
that is not the repository: every command finds its own files (schemas/, connectors/)
inside the installed package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from replicator.settings import read_env_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_works_outside_the_checkout() -> None:
    home = Path(tempfile.mkdtemp(prefix="replicator-wheel-"))  # outside pytest's tmp root
    try:
        run_from_wheel(home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_from_wheel(home: Path) -> None:
    # nothing of the checkout or of the test run may leak into the installed product
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATOR_", "PYTHON"))}
    wheels = home / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("workflow_runs_replicator-*.whl")
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], env=env, check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[stack]"],
        env=env,
        check=True,
        timeout=600,
    )
    work = home / "empty"
    work.mkdir()
    state = home / "state"
    env["REPLICATOR_STACK_DIR"] = str(state)
    env["REPLICATOR_ENV_FILE"] = str(state / "stack.env")
    replicator = str(venv / "bin" / "replicator")

    def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [replicator, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert res.returncode == 0, f"replicator {' '.join(argv)}:\n{res.stdout}\n{res.stderr}"
        return res

    try:
        cli("stack", "up")
        assert not (work / "schemas").exists() and not (work / "connectors").exists()
        cli("schema", "apply", "--roles")
        cli("connector", "apply")
        cli("sample", "--rows", "500")
        cli("run", "--exit-when-idle", "8", "--log-format", "human")
        settings = read_env_file(state / "stack.env")
        counts = []
        for side, table in (("SOURCE", "workflow_processes"), ("TARGET", "workflow_runs")):
            with psycopg.connect(settings[f"REPLICATOR_ADMIN_{side}_DSN"]) as conn:
                counts.append(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        assert counts == [500, 500]
        cli("backfill")  # every row is there already: loaded or skipped, none refused
        assert "in sync" in cli("verify").stdout
        assert "replayed" in cli("replay").stdout
    finally:
        subprocess.run(
            [replicator, "stack", "down"], cwd=work, env=env, capture_output=True, timeout=120
        )
