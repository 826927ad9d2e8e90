"""`replicator assess` on a real pair of tables: an isolated source replicated into a
target database of its own, then the plan's success criteria measured through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from replicator.db.schema import apply_target_schema
from replicator.local.sample import insert_rows
from tests.integration.conftest import (
    RunningReplicator,
    StackInfo,
    mapped_source,
    new_database,
    target_rows,
    unique,
)
from tests.integration.isolated import isolated_source

pytestmark = pytest.mark.integration


def test_assess_reports_the_plans_criteria(stack: StackInfo, cli_env: dict[str, str]) -> None:
    with isolated_source(stack, "asm") as iso:
        target = new_database(stack, "asmt")
        apply_target_schema(target)
        insert_rows(iso.source_dsn, 400, prefix="as-")
        settings = iso.settings(target_dsn=target, group_id=unique("g"))
        with RunningReplicator(settings):
            deadline = time.monotonic() + 60
            while mapped_source(iso.source_dsn) != target_rows(target, "workflow_runs"):
                assert time.monotonic() < deadline, "the target did not converge"
                time.sleep(0.5)
            env = cli_env | {
                "REPLICATOR_SOURCE_DSN": iso.service_source_dsn,
                "REPLICATOR_TARGET_DSN": target,
                "REPLICATOR_TOPIC": iso.topic,
            }
            res = subprocess.run(
                [sys.executable, "-m", "replicator", "assess", "--json", "--runs", "3"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            human = subprocess.run(
                [sys.executable, "-m", "replicator", "assess", "--runs", "3"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
    assert res.returncode in (0, 1), res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["error"] is None and report["verify_status"] == "in_sync"
    assert report["source"]["rows"] == report["target"]["rows"] == 400
    assert report["consumer_lag"] == 0
    assert report["target"]["index_bytes"] > 0 and report["source"]["heap_bytes"] > 0
    criteria = {c["name"]: c for c in report["criteria"]}
    assert criteria["zero data loss"]["passed"]
    assert set(criteria) == {
        "zero data loss",
        "query response time improved by 30%",
        "storage efficiency increased by 20%",
    }
    assert (
        report["exit_code"]
        == res.returncode
        == (0 if all(c["passed"] for c in criteria.values()) else 1)
    )
    queries = report["queries"]
    assert queries["by user and status"]["legacy"] is None
    assert all(q["new"]["median_ms"] > 0 for q in queries.values())
    assert queries["lookup by id"]["new"]["index_used"]  # the primary key
    assert queries["lookup by id"]["legacy"]["index_used"]
    # the same figures for people
    assert human.returncode == res.returncode, human.stderr
    assert "PASS  zero data loss" in human.stdout and "lookup by id" in human.stdout
    print(human.stdout)
