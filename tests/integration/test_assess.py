"""`replicator assess` on a real pair of tables: an isolated source replicated into a
target database of its own, then the plan's success criteria measured through the CLI,
with HypoPG (the local stack installs it) and without it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import psycopg
import pytest

from replicator.assess.report import SCHEMA_FILE
from replicator.db.schema import apply_target_schema
from replicator.local.sample import insert_rows
from tests.integration.conftest import (
    RunningReplicator,
    StackInfo,
    execute,
    mapped_source,
    new_database,
    target_rows,
    unique,
)
from tests.integration.isolated import isolated_source

pytestmark = pytest.mark.integration
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / SCHEMA_FILE).read_text())
LIVE_OBJECTS = (
    "SELECT string_agg(indexdef, ';' ORDER BY indexname) FROM pg_indexes"
    " WHERE tablename = 'workflow_runs'"
)


def run_assess(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", "assess", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one(dsn: str, query: str) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def check_report(report: dict, source_dsn: str) -> None:
    """What every report of these tables says, HypoPG or not."""
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    assert report["error"] is None and report["replication"]["verify_status"] == "in_sync"
    assert report["replication"]["rows"] == {"legacy": 400, "new": 400}
    assert report["replication"]["refused_by_mapping"] == 0
    questions = {q["name"]: q for q in report["questions"]}
    # the by-user question: no row has a user, so it is left out with the reason
    assert "constant-false" in questions["by user and status"]["left_out"]
    # the NULL-status question: the most common status is 'pending' once NULLs map to
    # it, legacy rows with a NULL status exist, and both sides still return the same rows
    assert report["parameters"]["status"] == "pending"
    assert one(source_dsn, "SELECT count(*) FROM workflow_processes WHERE status IS NULL")
    for name, q in questions.items():
        if q["compared"]:
            assert q["legacy"]["rows"] == q["new"]["rows"] > 0, name
            assert q["legacy"]["fingerprint"] == q["new"]["fingerprint"], name
            assert q["new"]["server_ms"]["runs"] == q["new"]["client_ms"]["runs"]
    assert questions["lookup by id"]["new"]["indexes"] == ["workflow_runs_pkey"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["equal answers"]["passed"] is True
    criteria = {c["name"]: c for c in report["criteria"]}
    assert criteria["zero data loss"]["passed"]
    assert set(criteria) == {
        "zero data loss",
        "query response time improved by 30%",
        "storage efficiency increased by 20%",
    }
    measured = [c["passed"] for c in [*criteria.values(), *checks.values()]]
    assert report["exit_code"] == (0 if all(p is not False for p in measured) else 1)
    new = report["storage"]["new"]
    assert set(new["plan_added_per_row"]) >= {"tags", "priority", "result_data_wrapping"}
    assert new["plan_added_bytes_per_row"] > 0 and report["storage"]["legacy"]["heap_bytes"] > 0
    assert all(i["idx_scan_window"] is not None for i in new["indexes"])
    scanned = {i["name"]: i["idx_scan_window"] for i in new["indexes"]}
    assert scanned["workflow_runs_pkey"] > 0 and scanned["idx_workflow_runs_user_id"] == 0


def test_assess_reports_the_plans_criteria(
    stack: StackInfo, cli_env: dict[str, str], tmp_path: Path
) -> None:
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
            live_before = one(target, LIVE_OBJECTS)
            chart = tmp_path / "assess.html"
            res = run_assess(env, "--json", "--runs", "3")
            human = run_assess(env, "--runs", "3", "--chart", str(chart))
            live_after = one(target, LIVE_OBJECTS)
            # without HypoPG: the equal-index estimate is not measured, the rest is
            execute(iso.source_dsn, "DROP EXTENSION IF EXISTS hypopg")
            bare = run_assess(env, "--json", "--runs", "1")
            lean = run_assess(env, "--json", "--runs", "1", "--no-scratch")
    assert res.returncode in (0, 1), res.stdout + res.stderr
    report = json.loads(res.stdout)
    check_report(report, iso.source_dsn)
    assert report["exit_code"] == res.returncode
    assert report["replication"]["consumer_lag"] == 0
    # assess is read-only on the live tables: the advice was measured on copies
    assert live_before == live_after
    equal = report["equal_indexes"]
    assert equal["hypothetical"]["measured"] and equal["copies"]["measured"]
    made = {i["new_index"]: i["legacy_columns"] for i in equal["indexes"]}
    assert made["idx_workflow_runs_type_status"] == (
        "(workflow_name, (COALESCE(status, 'pending')))"
    )
    assert made["idx_workflow_runs_user_id"] is None
    assert report["scratch"]["measured"] and report["scratch"]["floor_bytes_per_row"] > 0
    advice = {a["kind"]: a for a in report["advice"]}
    assert "idx_workflow_runs_user_id" in " ".join(advice["unused_indexes"]["statements"])
    assert all(not a["applied"] for a in report["advice"])
    storage = next(c for c in report["criteria"] if c["name"].startswith("storage"))
    floor = storage["floor"]
    assert floor["reachable"] == (floor["value"] <= floor["target"])
    assert ("unreachable by construction" in floor["figure"]) == (not floor["reachable"])
    # the same figures for people, and as a chart
    assert human.returncode == res.returncode, human.stderr
    for line in ("PASS  zero data loss", "lookup by id", "PASS  equal answers", "floor:"):
        assert line in human.stdout, line
    assert "<svg" in chart.read_text() and "created in a range" in chart.read_text()
    print(human.stdout)

    assert bare.returncode in (0, 1), bare.stdout + bare.stderr
    without = json.loads(bare.stdout)
    check_report(without, iso.source_dsn)
    hypo = without["equal_indexes"]["hypothetical"]
    assert not hypo["measured"] and hypo["reason"].startswith("not measured")
    assert without["equal_indexes"]["copies"]["measured"]  # the rest still works

    assert lean.returncode in (0, 1), lean.stdout + lean.stderr
    skipped = json.loads(lean.stdout)
    check_report(skipped, iso.source_dsn)
    assert skipped["scratch"]["reason"] == "not measured: --no-scratch"
    assert skipped["advice"] == []
    assert all(c["floor"]["reachable"] is None for c in skipped["criteria"][:2])
