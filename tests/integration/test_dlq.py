"""Dead letters as a queue on the real stack: list, fix the cause, redrive.

The story of the issue: rows whose total_cost overflows DECIMAL(10,4) are dead-lettered
while the stream flows; one of them is then fixed at the source and streams normally;
the operator widens the column; redrive applies the two others and resolves the fixed one
as superseded; a later change of a re-driven row wins; a second redrive changes nothing;
undecodable bytes stay listed as such.  Then the story of values the mapping refuses
whatever the target's type ('NaN'): the letters a fix at the source superseded (an
update, a delete) are resolved before they are mapped, the one still current fails again
until its row is fixed too."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from confluent_kafka import Producer

from tests.integration.conftest import (
    RunningReplicator,
    StackInfo,
    execute,
    target_rows,
    unique,
)
from tests.integration.isolated import isolated_source

pytestmark = pytest.mark.integration


def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "replicator", "dlq", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in res.stderr, res.stderr
    return res


def wait_for(what, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def cost_of(stack: StackInfo, table: str, run_id: str) -> Decimal | None:
    rows = target_rows(stack.target_dsn, table, "run_id = %s", (run_id,))
    return rows[run_id][17] if run_id in rows else None  # total_cost


def set_cost(dsn: str, run_id: str, cost: float) -> None:
    execute(dsn, ("UPDATE workflow_processes SET total_cost = %s WHERE id = %s", (cost, run_id)))


def test_list_fix_redrive(stack: StackInfo, cli_env: dict[str, str]) -> None:
    with isolated_source(stack, "dlq") as iso:
        table = unique("wr")
        env = cli_env | {
            "REPLICATOR_SOURCE_DSN": iso.service_source_dsn,
            "REPLICATOR_ADMIN_SOURCE_DSN": iso.source_dsn,
            "REPLICATOR_TOPIC": iso.topic,
            "REPLICATOR_TARGET_TABLE": table,
        }
        p = unique("od")
        ids = {name: f"{p}-{name}" for name in ("ok", "a", "b", "c")}
        insert = (
            "INSERT INTO workflow_processes (id, workflow_name, message, total_cost)"
            " VALUES (%s, 'w', 'm', %s)"
        )
        settings = iso.settings(target_table=table, group_id=unique("g"))
        with RunningReplicator(settings) as running:
            tally = running.replicator.metrics.tally
            execute(
                iso.source_dsn,
                (insert, (ids["ok"], 1.5)),
                *[(insert, (ids[n], 5_000_000.0)) for n in ("a", "b", "c")],
            )
            wait_for(lambda: tally.dead_lettered >= 3 and cost_of(stack, table, ids["ok"]))

            listed = json.loads(cli(env, "list", "--json").stdout)
            (group,) = listed["groups"]
            assert group["reason"] == "mapping_error" and group["count"] == 3
            assert {json.loads(e["key"])["id"] for e in listed["events"]} == {ids[n] for n in "abc"}
            assert all("value" not in e for e in listed["events"])  # no row contents
            first = listed["events"][0]  # found again by the origin `list` prints
            origin = f"{first['origin']['partition']}:{first['origin']['offset']}"
            (shown,) = json.loads(cli(env, "show", "--origin", origin).stdout)
            assert shown["offset"] == first["offset"] and shown["key"] == first["key"]

            execute(
                iso.source_dsn,
                ("UPDATE workflow_processes SET total_cost = 12.5 WHERE id = %s", (ids["a"],)),
            )
            wait_for(lambda: cost_of(stack, table, ids["a"]) == Decimal("12.5000"))

            execute(
                stack.target_dsn,
                f'ALTER TABLE "{table}" ALTER COLUMN total_cost TYPE DECIMAL(12,4)',
            )
            rehearsed = cli(env, "redrive", "--dry-run")  # exactly what the redrive does
            assert "2 would apply, 1 superseded" in rehearsed.stdout, rehearsed.stdout
            assert cost_of(stack, table, ids["b"]) is None  # and nothing was written
            res = cli(env, "redrive")
            assert res.returncode == 0, res.stdout + res.stderr
            assert "2 applied, 1 superseded" in res.stdout, res.stdout
            assert cost_of(stack, table, ids["b"]) == Decimal("5000000.0000")
            assert cost_of(stack, table, ids["c"]) == Decimal("5000000.0000")
            assert cost_of(stack, table, ids["a"]) == Decimal("12.5000")  # never overwritten

            execute(
                iso.source_dsn,
                ("UPDATE workflow_processes SET total_cost = 7 WHERE id = %s", (ids["b"],)),
            )
            wait_for(lambda: cost_of(stack, table, ids["b"]) == Decimal("7.0000"))

            producer = Producer({"bootstrap.servers": stack.bootstrap})
            producer.produce(iso.topic, key=b"\xff", value=b"\x00 not json", partition=0)
            assert producer.flush(10) == 0
            wait_for(lambda: tally.dead_lettered >= 4)

        res = cli(env, "redrive")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "0 applied, 0 superseded" in res.stdout and "3 re-driven before" in res.stdout
        assert "1 skipped as undecodable" in res.stdout
        assert cost_of(stack, table, ids["b"]) == Decimal("7.0000")  # the later change stays

        text = cli(env, "list").stdout
        assert "mapping_error: 3 (2 re-driven, 1 superseded, 0 failed again, 0 dismissed)" in text
        assert "invalid_json: 1 (0 re-driven, 0 superseded, 0 failed again, 0 dismissed)" in text
        # fixed another way: dismissed, recorded, and skipped by every later redrive
        dismissed = cli(env, "dismiss", "--reason", "invalid_json")
        assert "dismissed 1 dead letters" in dismissed.stdout, dismissed.stdout + dismissed.stderr
        listed_now = cli(env, "list").stdout
        assert "invalid_json: 1 (0 re-driven, 0 superseded, 0 failed again, 1 dismissed)" in (
            listed_now
        )
        again = cli(env, "redrive")
        assert again.returncode == 0 and "0 skipped as undecodable" in again.stdout, again.stdout
        shown = json.loads(cli(env, "show", "--key", ids["c"]).stdout)
        assert shown[0]["headers"]["dlq.reason"] == "mapping_error"
        assert shown[0]["redriven"] == "applied"


def test_letters_a_fix_at_the_source_superseded_are_resolved_before_mapping(
    stack: StackInfo, cli_env: dict[str, str]
) -> None:
    """Rows set to total_cost 'NaN' are dead-lettered (no column type takes it).  Fixed at
    the source, one by an update, one by a delete, one inserted as NaN and then updated,
    they stream; the fourth is still NaN.  redrive decides the three fixed ones superseded
    before mapping them (they never fail on the NaN again), fails the current one, and
    exits 1 for it alone; once that row is fixed too, redrive exits 0.  `dlq list` shows
    them as superseded; nothing a redrive skipped is written over the newer rows."""
    with isolated_source(stack, "sup") as iso:
        table = unique("wr")
        env = cli_env | {"REPLICATOR_TOPIC": iso.topic, "REPLICATOR_TARGET_TABLE": table}
        p = unique("sp")
        ids = {name: f"{p}-{name}" for name in ("upd", "del", "new", "cur")}
        insert = (
            "INSERT INTO workflow_processes (id, workflow_name, message, total_cost)"
            " VALUES (%s, 'w', 'm', %s)"
        )
        nan = "UPDATE workflow_processes SET total_cost = 'NaN' WHERE id = %s"
        settings = iso.settings(target_table=table, group_id=unique("g"))
        with RunningReplicator(settings) as running:
            tally = running.replicator.metrics.tally
            execute(iso.source_dsn, *[(insert, (ids[n], 1.5)) for n in ("upd", "del", "cur")])
            wait_for(lambda: all(cost_of(stack, table, ids[n]) for n in ("upd", "del", "cur")))
            execute(
                iso.source_dsn,
                *[(nan, (ids[n],)) for n in ("upd", "del", "cur")],
                (
                    "INSERT INTO workflow_processes (id, workflow_name, message, total_cost)"
                    " VALUES (%s, 'w', 'm', 'NaN')",
                    (ids["new"],),
                ),
            )
            wait_for(lambda: tally.dead_lettered >= 4)
            assert cost_of(stack, table, ids["cur"]) == Decimal("1.5000")  # the older image

            set_cost(iso.source_dsn, ids["upd"], 2.5)
            set_cost(iso.source_dsn, ids["new"], 4)
            execute(iso.source_dsn, ("DELETE FROM workflow_processes WHERE id = %s", (ids["del"],)))
            wait_for(
                lambda: (
                    cost_of(stack, table, ids["upd"]) == Decimal("2.5000")
                    and cost_of(stack, table, ids["new"]) == Decimal("4.0000")
                    and cost_of(stack, table, ids["del"]) is None
                )
            )

            rehearsed = cli(env, "redrive", "--dry-run")
            assert "3 superseded" in rehearsed.stdout, rehearsed.stdout
            res = cli(env, "redrive")
            assert res.returncode == 1, res.stdout + res.stderr  # the current one fails
            assert "0 applied, 3 superseded" in res.stdout, res.stdout
            assert "1 failed again" in res.stdout, res.stdout
            (failure,) = [line for line in res.stdout.splitlines() if "failed again:" in line]
            assert ids["cur"] in failure and "not a finite number" in failure, failure
            text = cli(env, "list").stdout
            assert "mapping_error: 4 (0 re-driven, 3 superseded, 1 failed again" in text, text
            listed = json.loads(cli(env, "list", "--json").stdout)
            outcomes = {json.loads(e["key"])["id"]: e["redriven"] for e in listed["events"]}
            assert outcomes == {
                ids["upd"]: "superseded",
                ids["del"]: "superseded",
                ids["new"]: "superseded",
                ids["cur"]: "failed",
            }

            set_cost(iso.source_dsn, ids["cur"], 3)
            wait_for(lambda: cost_of(stack, table, ids["cur"]) == Decimal("3.0000"))

        res = cli(env, "redrive")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "0 applied, 1 superseded" in res.stdout, res.stdout
        assert "0 failed again" in res.stdout, res.stdout
        assert "3 re-driven before" in res.stdout, res.stdout
        text = cli(env, "list").stdout
        assert "mapping_error: 4 (0 re-driven, 4 superseded, 0 failed again" in text, text
        assert cost_of(stack, table, ids["upd"]) == Decimal("2.5000")
        assert cost_of(stack, table, ids["new"]) == Decimal("4.0000")
        assert cost_of(stack, table, ids["cur"]) == Decimal("3.0000")
        assert cost_of(stack, table, ids["del"]) is None


def test_a_partial_update_of_a_row_the_target_lacks_is_dead_lettered(
    stack: StackInfo, cli_env: dict[str, str]
) -> None:
    """An UPDATE leaving a TOASTed column unchanged arrives without it; when the target
    has no row to complete, the event is dead-lettered with its reason, never dropped."""
    with isolated_source(stack, "part") as iso:
        table = unique("wr")
        env = cli_env | {"REPLICATOR_TOPIC": iso.topic, "REPLICATOR_TARGET_TABLE": table}
        rid = unique("toast")
        settings = iso.settings(target_table=table, group_id=unique("g"))
        with RunningReplicator(settings) as running:
            tally = running.replicator.metrics.tally
            execute(
                iso.source_dsn,
                (
                    "INSERT INTO workflow_processes (id, workflow_name, message, result)"
                    " SELECT %s, 'w', 'm', string_agg(md5(random()::text), '')"
                    " FROM generate_series(1, 3000)",  # 96 KB, incompressible: TOASTed
                    (rid,),
                ),
            )
            wait_for(lambda: rid in target_rows(stack.target_dsn, table, "run_id = %s", (rid,)))
            execute(stack.target_dsn, (f'DELETE FROM "{table}" WHERE run_id = %s', (rid,)))
            execute(
                iso.source_dsn,
                ("UPDATE workflow_processes SET status = 'done' WHERE id = %s", (rid,)),
            )
            wait_for(lambda: tally.dead_lettered >= 1)
            counted = running.replicator.metrics.dead_letters.labels(
                "partial_update_missing_row"
            )._value.get()
        assert counted == 1
        listed = json.loads(cli(env, "list", "--json").stdout)
        (group,) = listed["groups"]
        assert group["reason"] == "partial_update_missing_row" and group["count"] == 1
        assert json.loads(listed["events"][0]["key"])["id"] == rid
