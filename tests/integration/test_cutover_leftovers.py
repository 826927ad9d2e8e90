"""What the status commands say on a stack of this module's own: with PostgreSQL down, a
second ``sample``, and after a cutover interrupted between its switch and the removal of
the connector's slot (the slot re-created by hand: what Ctrl-C right after "cut over at
LSN" leaves), until ``replicator cutover`` run again removes it; refusals after the
cutover and the finalize.  The tests run in order: the cutover comes last."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from replicator.local.processes import free_port
from replicator.local.stack import LocalStack
from tests.integration.own_stack import OwnStack, converged, started_own_stack, wait_for

pytestmark = pytest.mark.integration

SLOT = "replicator_workflow_processes"
STATUS = (
    ("stack", "status"),
    ("connector", "status"),
    ("cutover", "--dry-run"),
    ("verify",),
)


@pytest.fixture(scope="module")
def own() -> Iterator[OwnStack]:
    with started_own_stack() as stack:
        yield stack


def sql(own: OwnStack, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(own.settings["REPLICATOR_ADMIN_SOURCE_DSN"], autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def connector_part(own: OwnStack) -> dict[str, object]:
    status = json.loads(own.cli("stack", "status", "--json", ok=False).stdout)
    return dict(status["parts"]["connector"])


def test_sample_starts_past_the_rows_there_are(own: OwnStack) -> None:
    # started_own_stack inserted wp-00000000..wp-00000499
    for _ in range(2):
        own.cli("sample", "--rows", "5")
    ids = sql(own, "SELECT id FROM workflow_processes WHERE id >= 'wp-00000500' ORDER BY id")
    assert [r[0] for r in ids] == [f"wp-{n:08d}" for n in range(500, 510)]


def test_with_postgresql_down_the_connector_is_not_ok(own: OwnStack) -> None:
    wait_for(lambda: connector_part(own).get("healthy") is True, 120)
    stack = LocalStack(own.home / "state", log=lambda line: None)
    stack.stop_postgres()
    try:
        part = connector_part(own)
        shown = own.cli("stack", "status", ok=False)
        assert shown.returncode == 1
        assert part["healthy"] is False and str(part["state"]).startswith("unknown"), part
        line = next(x for x in shown.stdout.splitlines() if " connector " in x)
        assert line.startswith("DOWN") and "PostgreSQL is down" in line, shown.stdout
    finally:
        stack.start_postgres()
    wait_for(lambda: connector_part(own).get("healthy") is True, 180)
    # Connect says RUNNING at once; its task streams again only after its retry wait (10 s)
    active = f"SELECT active FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
    wait_for(lambda: sql(own, active) == [(True,)], 120)


def test_an_interrupted_cutover_is_said_by_every_status_until_cutover_finishes_it(
    own: OwnStack,
) -> None:
    run = own.spawn_run(free_port())
    try:
        converged(own)
        own.cli("cutover")
    finally:
        stop(run)
    for argv in STATUS:  # the cutover finished: nothing left
        assert own.cli(*argv, ok=False).returncode == 0, argv
    # what an interrupted `cutover` leaves: the switch committed, the slot not dropped
    sql(own, f"SELECT pg_create_logical_replication_slot('{SLOT}', 'pgoutput')")
    for argv in STATUS:
        said = own.cli(*argv, ok=False)
        out = said.stdout + said.stderr
        assert said.returncode == 1, (argv, out)
        assert f"replication slot {SLOT}" in out and "retaining" in out, (argv, out)
        assert "`replicator cutover` run again removes it" in out, (argv, out)
    again = own.cli("cutover")
    assert f"replication slot {SLOT} dropped" in again.stdout, again.stdout
    assert sql(own, "SELECT slot_name FROM pg_replication_slots") == []
    for argv in STATUS:
        said = own.cli(*argv, ok=False)
        assert said.returncode == 0, (argv, said.stdout + said.stderr)
    assert "nothing left to do" in own.cli("cutover").stdout


def test_after_the_cutover_refusals_are_refusals(own: OwnStack) -> None:
    for argv in (("dlq", "redrive"), ("connector", "apply"), ("replay", "--into", "workflow_runs")):
        refused = own.cli(*argv, ok=False)
        assert refused.returncode == 3, (argv, refused.stdout + refused.stderr)
        assert refused.stderr.startswith("replicator: refused: "), refused.stderr
    own.cli("cutover", "--finalize")
    refused = own.cli("rollback", ok=False)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "closed the rollback window" in refused.stderr and "no way back" in refused.stderr
    # after the finalize the publication is not needed either
    sql(own, "CREATE PUBLICATION replicator_workflow_processes FOR TABLE debezium_signal")
    for argv in STATUS:
        said = own.cli(*argv, ok=False)
        assert said.returncode == 1, (argv, said.stdout + said.stderr)
        assert "publication replicator_workflow_processes" in said.stdout + said.stderr, argv
    own.cli("cutover")
    for argv in STATUS:
        assert own.cli(*argv, ok=False).returncode == 0, argv


def stop(run: subprocess.Popen) -> None:
    if run.poll() is None:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
