"""docker-compose.yml is valid and wires the same connector file as the local stack."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_validates() -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed; scripts/bootstrap.sh installs it")
    res = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    assert "wal_level=logical" in res.stdout
    assert "REPLICATOR_METRICS_PORT" in res.stdout and "/readyz" in res.stdout
    # every ${env:VAR} of the connector config is provided to the Connect worker
    config = json.loads((ROOT / "connectors" / "workflow-processes.json").read_text())["config"]
    wanted = {v[6:-1] for v in config.values() if v.startswith("${env:")}
    assert wanted, "connector config uses no env placeholders"
    for var in wanted:
        assert f"{var}:" in res.stdout, f"{var} not set for the connect service"


def test_compose_creates_the_publication_before_the_connector() -> None:
    """The connector does not create its publication: schemas/roles.sql does, first."""
    text = (ROOT / "docker-compose.yml").read_text()
    config = json.loads((ROOT / "connectors" / "workflow-processes.json").read_text())["config"]
    assert config["publication.autocreate.mode"] == "disabled"
    roles, connector = text.index("schema apply --roles"), text.index("connector apply")
    assert roles < connector
