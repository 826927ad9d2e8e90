"""replicator verify on the real stack: in sync, drift found and listed, repaired, live."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections.abc import Iterator

import psycopg
import pytest

from replicator.db.schema import apply_target_schema
from replicator.local.sample import insert_rows, legacy_row
from replicator.verify.runner import Options, verify
from tests.integration.conftest import (
    RunningReplicator,
    StackInfo,
    churn_until,
    execute,
    new_database,
    unique,
    wait_converged,
)
from tests.integration.isolated import isolated_source

pytestmark = pytest.mark.integration

#: ids a filter must quote safely (verify --repair puts drifted ids into a snapshot filter)
ODD_IDS = ["odd-'quote'", "odd-\\back\\slash", "odd-$$dollar$$", "odd-ünï-%s-%%", 'odd-"; DROP']


@pytest.fixture(scope="module")
def iso(stack: StackInfo) -> Iterator[StackInfo]:
    with isolated_source(stack, "ver") as isolated:
        yield isolated


def insert_odd_rows(dsn: str) -> None:
    rng = random.Random(5)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for run_id in ODD_IDS:
            conn.execute(
                "INSERT INTO workflow_processes VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,"
                "%s,%s,%s,%s)",
                legacy_row(rng, run_id),
            )


def run_verify(env: dict[str, str], *args: str) -> tuple[int, dict]:
    res = subprocess.run(
        [sys.executable, "-m", "replicator", "verify", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode in (0, 1, 2), res.stderr
    return res.returncode, json.loads(res.stdout) if res.stdout.strip() else {}


def test_in_sync_then_drift_listed_then_repaired(iso: StackInfo, cli_env: dict[str, str]) -> None:
    table = unique("wr")
    apply_target_schema(iso.target_dsn, table)
    p = unique("v")
    insert_rows(iso.source_dsn, 3000, prefix=f"{p}-")
    insert_odd_rows(iso.source_dsn)
    env = cli_env | {
        "REPLICATOR_SOURCE_DSN": iso.service_source_dsn,
        "REPLICATOR_ADMIN_SOURCE_DSN": iso.source_dsn,
        "REPLICATOR_TOPIC": iso.topic,
    }
    with RunningReplicator(iso.settings(target_table=table, group_id=unique("g"))):
        wait_converged(iso, table, "")
        code, report = run_verify(env, "--target-table", table, "--chunk-rows", "500")
        assert (code, report["status"]) == (0, "in_sync"), report
        assert report["source"]["rows"] == report["target"]["rows"] >= 3005
        assert report["chunks"]["total"] >= 6 and report["chunks"]["differing"] == 0

        missing = sorted([f"{p}-00000010", ODD_IDS[0]])
        different = {f"{p}-00000020": ["status", "total_cost"], ODD_IDS[1]: ["result_data"]}
        extra = sorted([f"{p}-zz-extra", ODD_IDS[4] + "-extra"])
        execute(
            iso.target_dsn,
            (f'DELETE FROM "{table}" WHERE run_id = ANY(%s)', (missing,)),
            (
                f"UPDATE \"{table}\" SET status = 'zzz', total_cost = 1.5 WHERE run_id = %s",
                (f"{p}-00000020",),
            ),
            (
                f'UPDATE "{table}" SET result_data = %s WHERE run_id = %s',
                ('{"result":  "spaces differ"}', ODD_IDS[1]),
            ),
            *[
                (
                    f'INSERT INTO "{table}" (run_id, workflow_type, description)'
                    " VALUES (%s, 'w', 'm')",
                    (run_id,),
                )
                for run_id in extra
            ],
        )
        code, report = run_verify(env, "--target-table", table, "--chunk-rows", "500")
        assert (code, report["status"], report["confirmed"]) == (1, "drift", True), report
        assert sorted(report["missing"]["ids"]) == missing
        assert sorted(report["extra"]["ids"]) == extra
        assert {r["run_id"]: r["columns"] for r in report["different"]["rows"]} == different
        assert report["different"]["total"] == 2 and report["unmappable"]["total"] == 0
        code, report = run_verify(env, "--target-table", table, "--max-report", "1")
        assert report["missing"]["total"] == 2 and len(report["missing"]["ids"]) == 1

        code, report = run_verify(env, "--target-table", table, "--repair")
        assert (code, report["status"]) == (0, "in_sync"), report
        assert report["repair"]["snapshot_ids"] == 4 and report["repair"]["deleted"] == 2
        assert report["repair"]["converged"]
        wait_converged(iso, table, "")


def test_separate_target_database(iso: StackInfo) -> None:
    target = iso.with_target(new_database(iso, "vertgt"))
    table = unique("wr")
    apply_target_schema(target.target_dsn, table)
    p = unique("vs")
    insert_rows(iso.source_dsn, 500, prefix=f"{p}-")
    settings = target.settings(target_table=table, group_id=unique("g"))
    with RunningReplicator(settings):
        wait_converged(target, table, "")
        report = verify(settings)
        assert report.status == "in_sync" and report.source_rows == report.target_rows
        execute(
            target.target_dsn,
            (f'DELETE FROM "{table}" WHERE run_id = %s', (f"{p}-00000001",)),
            (f'UPDATE "{table}" SET max_turns = -1 WHERE run_id = %s', (f"{p}-00000002",)),
        )
        report = verify(settings)
        assert report.status == "drift" and report.exit_code == 1
        assert {k: (d.kind, d.columns) for k, d in report.drift.items()} == {
            f"{p}-00000001": ("missing", ()),
            f"{p}-00000002": ("different", ("max_turns",)),
        }
        report = verify(settings, repair_drift=True)
        assert report.status == "in_sync" and report.repair is not None
        assert report.repair.converged and report.repair.signals == 1


def test_rows_changing_while_verifying_are_not_drift(iso: StackInfo) -> None:
    table = unique("wr")
    apply_target_schema(iso.target_dsn, table)
    p = unique("live")
    insert_rows(iso.source_dsn, 300, prefix=f"{p}-")
    settings = iso.settings(target_table=table, group_id=unique("g"))
    with RunningReplicator(settings):
        wait_converged(iso, table, "")
        stop = threading.Event()
        writer = threading.Thread(
            target=churn_until, args=(iso.source_dsn, p, 300, stop, 11), daemon=True
        )
        writer.start()
        try:
            reports = [verify(settings, options=Options(chunk_rows=50)) for _ in range(3)]
        finally:
            stop.set()
            writer.join(30)
        for report in reports:
            assert report.status == "in_sync", json.dumps(report.to_dict())
        assert any(r.suspects for r in reports)  # the churn was seen, and cleared
        # the same comparison without waiting for the replicator sees the churn as drift
        static = Options(chunk_rows=50, catch_up_timeout_s=0)
        writer = threading.Thread(
            target=churn_until, args=(iso.source_dsn, p, 300, stop, 11), daemon=True
        )
        stop.clear()
        writer.start()
        try:
            assert any(verify(settings, options=static).drift for _ in range(5))
        finally:
            stop.set()
            writer.join(30)
        wait_converged(iso, table, "")


def test_not_caught_up_is_could_not_verify(iso: StackInfo) -> None:
    table = unique("wr")
    apply_target_schema(iso.target_dsn, table)
    settings = iso.settings(target_table=table, group_id=unique("g"))
    with RunningReplicator(settings):
        wait_converged(iso, table, "")
    p = unique("late")
    insert_rows(iso.source_dsn, 5, prefix=f"{p}-")  # nothing replicates these
    report = verify(settings, options=Options(catch_up_timeout_s=3))
    assert report.status == "unverified" and report.exit_code == 2
    assert "did not catch up" in (report.error or "")
    assert {d.kind for d in report.drift.values()} == {"missing"}
    with RunningReplicator(settings):
        wait_converged(iso, table, "")
        assert verify(settings).status == "in_sync"
