"""The benchmark harness itself works (tiny N); it reports figures, it asserts no speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import StackInfo

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def harness(script: str, stack: StackInfo, *args: str) -> subprocess.CompletedProcess[str]:
    """``bench/<script>`` on the test stack.  A harness that times the product runs
    unmeasured: coverage's tracer would be part of every figure (the product code it
    drives is measured by other tests)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--env-file", stack.stack.env_file, *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")},
    )


def test_bench_harness_runs_and_reports(stack: StackInfo, tmp_path: Path) -> None:
    res = harness(
        "run.py", stack, "--rows", "300", "--trials", "1", "--rates", "50",
        "--latency-seconds", "2", "--out", str(tmp_path),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    (report_file,) = tmp_path.glob("*.json")
    report = json.loads(report_file.read_text())
    results = report["results"]
    for key in (
        "A_in_database",
        "B_bare_consumer",
        "run_replicator",
        "in_memory",
        "initial_load_snapshot",
        "latency",
        "replay_verify",
    ):
        assert key in results, key
    assert results["run_replicator"]["rows"] == 300
    # one trial here: choosing the median trial is tests/unit/test_bench_trials.py's
    assert [t["run_replicator"] for t in results["trials"]] == [results["run_replicator"]]
    assert len(report["summary"]["run/C trials"]) == 1
    assert results["C_peer"]["events"] == results["run_replicator"]["events"]
    cases = results["edge_cases"]
    assert set(cases) == {"redelivery", "out_of_order_replay", "toast_placeholder", "poison_row"}
    assert all(case["replicator"].startswith("right") for case in cases.values()), cases
    assert all(case["C"].startswith("WRONG") for case in cases.values()), cases
    assert results["B_bare_consumer"]["events"] == 300
    assert results["latency"][0]["observed"] > 0
    assert results["latency"][0]["capture_p50_ms"] >= 0
    assert results["latency"][0]["broker_p50_ms"] >= 0
    assert results["latency"][0]["bare_tail_p50_ms"] >= 0
    replay, verify = results["replay_verify"]["replay"], results["replay_verify"]["verify"]
    assert replay["events"] >= 300
    assert verify["status"] in ("in_sync", "drift"), verify  # a report, not a failure
    assert None not in (report["summary"]["run/B"], report["summary"]["in_memory/A"])
    assert report["machine"]["cores"] >= 1
    assert (tmp_path / report_file.name.replace(".json", ".md")).exists()
    assert (tmp_path / report_file.name.replace(".json", ".png")).exists()


def test_soak_harness_runs_and_reports(stack: StackInfo, tmp_path: Path) -> None:
    res = harness(
        "soak.py", stack, "--normal", "20", "--factor", "2", "--minutes", "1",
        "--rows", "200", "--out", str(tmp_path),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    (report_file,) = tmp_path.glob("*-soak.json")
    soak = json.loads(report_file.read_text())["soak"]
    (minute,) = soak["minutes"]
    assert soak["rate"] == 40 and soak["changes_written"] >= 40 * 50
    assert minute["rows_applied"] > 0 and minute["rss_mb"] > 0
    assert minute["e2e_p99_s"] is not None and minute["e2e_p99_s"] >= minute["e2e_p50_s"]
    assert soak["verify"]["status"] in ("in_sync", "drift"), soak["verify"]  # a report
    assert (tmp_path / report_file.name.replace(".json", ".md")).exists()
    assert (tmp_path / report_file.name.replace(".json", ".png")).exists()
