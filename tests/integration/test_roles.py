"""schemas/roles.sql: the replicator's role replicates, and can touch nothing else."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from replicator.local.sample import insert_rows
from tests.integration.conftest import RunningReplicator, StackInfo, unique, wait_converged

pytestmark = pytest.mark.integration

ROLES = Path(__file__).resolve().parents[2] / "schemas" / "roles.sql"


def as_role(dsn: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, user=role)


@pytest.fixture(scope="module")
def roles(stack: StackInfo) -> None:
    with psycopg.connect(stack.source_dsn, autocommit=True) as conn:
        conn.execute(ROLES.read_text())
        conn.execute(ROLES.read_text())  # idempotent


def test_replicator_role_replicates(stack: StackInfo, roles: None) -> None:
    app = as_role(stack.target_dsn, "replicator_app")
    p = unique("role")
    settings = stack.settings(
        target_dsn=app, source_dsn=as_role(stack.source_dsn, "replicator_app"), group_id=unique("g")
    )
    with RunningReplicator(settings):
        insert_rows(stack.source_dsn, 50, prefix=f"{p}-")
        wait_converged(stack, "workflow_runs", p)


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM workflow_processes",
        "UPDATE workflow_processes SET status = 'x'",
        "INSERT INTO users (id) VALUES ('u')",
        "SELECT * FROM users",
        "DROP TABLE workflow_runs",
        "TRUNCATE workflow_runs",
        "CREATE TABLE intruder (id int)",
        "ALTER TABLE replicator_offsets ADD COLUMN x int",
    ],
)
def test_replicator_role_cannot_touch_anything_else(
    stack: StackInfo, roles: None, statement: str
) -> None:
    with (
        psycopg.connect(as_role(stack.target_dsn, "replicator_app")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)


def test_debezium_role_can_read_only_the_legacy_table(stack: StackInfo, roles: None) -> None:
    with psycopg.connect(as_role(stack.source_dsn, "replicator_debezium")) as conn:
        conn.execute("SELECT count(*) FROM workflow_processes").fetchone()
        conn.rollback()
        for statement in ("SELECT * FROM workflow_runs", "DELETE FROM workflow_processes"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()
        (replication,) = conn.execute(
            "SELECT rolreplication FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert replication


def test_stack_runs_without_a_superuser(stack: StackInfo) -> None:
    """The stack's service DSNs and Debezium's replication session use the roles above."""
    for dsn in (stack.service_source_dsn, stack.service_target_dsn):
        with psycopg.connect(dsn) as conn:
            user, superuser = conn.execute(
                "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        assert (user, superuser) == ("replicator_app", False)
    with psycopg.connect(stack.source_dsn) as conn:
        sessions = conn.execute(
            "SELECT a.usename, r.rolsuper FROM pg_replication_slots s"
            " JOIN pg_stat_activity a ON a.pid = s.active_pid"
            " JOIN pg_roles r ON r.rolname = a.usename"
        ).fetchall()
    assert sessions, "Debezium holds no replication slot"
    assert set(sessions) == {("replicator_debezium", False)}


def test_schema_apply_roles_is_idempotent(stack: StackInfo, cli_env: dict[str, str]) -> None:
    """`schema apply --roles`, as docker-compose runs it at every start."""
    import subprocess
    import sys

    for _ in range(2):
        res = subprocess.run(
            [sys.executable, "-m", "replicator", "schema", "apply", "--roles"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        assert "roles: roles replicator_debezium and replicator_app granted" in res.stdout
    with psycopg.connect(stack.source_dsn) as conn:
        (tables,) = conn.execute(
            "SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_publication_tables"
            " WHERE pubname = 'replicator_workflow_processes'"
        ).fetchone()
    assert tables == ["debezium_heartbeat", "debezium_signal", "workflow_processes"]


def test_the_service_role_reads_no_other_session_and_still_sees_the_slot(
    stack: StackInfo, roles: None
) -> None:
    """Least privilege: no pg_monitor (it brings pg_read_all_stats, other sessions' query
    text), and what the product reads as that role, the slot's lag, still reads."""
    from replicator.observe.tracker import SLOT_LAG

    with psycopg.connect(stack.source_dsn, autocommit=True) as owner:
        owner.execute("GRANT pg_monitor TO replicator_app")  # as an older roles.sql did
        owner.execute(ROLES.read_text())  # the current one takes it back
        assert owner.execute(
            "SELECT pg_has_role('replicator_app', 'pg_read_all_stats', 'MEMBER')"
        ).fetchone() == (False,)
        slots = owner.execute("SELECT slot_name FROM pg_replication_slots").fetchall()
    assert slots, "the session's connector has a slot"
    with psycopg.connect(as_role(stack.source_dsn, "replicator_app")) as app:
        hidden = app.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename <> current_user"
            " AND query <> '<insufficient privilege>' AND query <> ''"
        ).fetchone()
        assert hidden == (0,)
        (lag,) = app.execute(SLOT_LAG, [slots[0][0]]).fetchone()
        assert lag is not None and lag >= 0
