"""replicator verify on the real stack: in sync, drift found and listed, repaired, live;
a source row the mapping refuses is not in sync."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

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
    target_rows,
    unique,
    wait_converged,
)
from tests.integration.isolated import isolated_source

pytestmark = pytest.mark.integration

#: ids every statement must quote safely (verify --repair reads and writes drifted ids)
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
        assert report["repair"]["from_source"] == 4 and report["repair"]["deleted"] == 2
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
        assert report.repair.converged and report.repair.from_source == 2


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


def wait_for(what: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_an_unmappable_source_row_is_not_in_sync(stack: StackInfo, cli_env: dict[str, str]) -> None:
    """One row updated to a value the mapping refuses (the target keeps its older image),
    one inserted so (the target has none): verify exits 1 (drift) and names both with the
    reason and what the target holds; --repair writes nothing for them and still exits 1;
    once the source rows are fixed and streamed, verify exits 0."""
    with isolated_source(stack, "vun") as src:  # its own source: the others compare theirs whole
        table = unique("wr")
        apply_target_schema(src.target_dsn, table)
        p = unique("un")
        stale, absent, ok = f"{p}-stale", f"{p}-absent", f"{p}-ok"
        insert = (
            "INSERT INTO workflow_processes (id, workflow_name, message, total_cost)"
            " VALUES (%s, 'w', 'm', %s)"
        )
        cost = "UPDATE workflow_processes SET total_cost = %s WHERE id = %s"
        env = cli_env | {
            "REPLICATOR_SOURCE_DSN": src.service_source_dsn,
            "REPLICATOR_ADMIN_SOURCE_DSN": src.source_dsn,
            "REPLICATOR_TOPIC": src.topic,
        }

        def held() -> dict[str, tuple]:
            return target_rows(src.target_dsn, table, "run_id LIKE %s", (p + "%",))

        with RunningReplicator(src.settings(target_table=table, group_id=unique("g"))) as running:
            tally = running.replicator.metrics.tally
            execute(src.source_dsn, (insert, (stale, 1.5)), (insert, (ok, 2)))
            wait_for(lambda: set(held()) == {stale, ok})
            before = held()[stale]
            execute(
                src.source_dsn,
                (cost, ("NaN", stale)),
                (
                    "INSERT INTO workflow_processes (id, workflow_name, message, total_cost)"
                    " VALUES (%s, 'w', 'm', 'NaN')",
                    (absent,),
                ),
            )
            wait_for(lambda: tally.dead_lettered >= 2)

            code, report = run_verify(env, "--target-table", table)
            assert (code, report["status"], report["exit_code"]) == (1, "drift", 1), report
            assert report["confirmed"] and report["unmappable"]["total"] == 2, report
            rows = {r["run_id"]: r for r in report["unmappable"]["rows"]}
            assert {k: r["target"] for k, r in rows.items()} == {
                stale: "older image",
                absent: "no row",
            }
            assert all("not a finite number" in r["reason"] for r in rows.values()), rows
            assert report["missing"]["total"] == report["different"]["total"] == 0, report

            code, report = run_verify(env, "--target-table", table, "--repair")
            assert (code, report["status"]) == (1, "drift"), report
            assert "repair" not in report  # nothing a repair could write
            assert held()[stale] == before and absent not in held()  # nothing guessed

            execute(src.source_dsn, (cost, (3, stale)), (cost, (4, absent)))
            wait_for(lambda: set(held()) == {stale, absent, ok} and held()[stale] != before)
            code, report = run_verify(env, "--target-table", table)
            assert (code, report["status"]) == (0, "in_sync"), report
