"""The compatibility view held to the legacy table's behaviour where a concurrent
application or ``INSERT ... ON CONFLICT`` meets it, and the rollback's restore of a row
the application wrote only in part.  Each test on a database of its own (the session's
stack for Kafka), the switch and the rollback called as ``replicator cutover`` and
``replicator rollback`` call them.

* every form of ``INSERT ... ON CONFLICT`` through the view fails with one error, 0A000,
  and writes nothing (the table would answer ``INSERT 0 0`` or upsert);
* a statement that read a row another transaction then gave another id fails with 40001
  (the table follows the row to its new id and re-checks the statement there), while a
  row deleted meanwhile is still skipped, as on the table;
* after a rollback, a row written through the view (or directly) has its written columns
  as written and every other column as archived: a NULL ``status``, a REAL's exact value,
  also when several connections wrote different columns of the same rows at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from replicator.cutover import rollback, switch
from replicator.db.schema import apply_source_schema
from replicator.mapping.columns import SOURCE_COLUMNS, TARGET_COLUMNS
from replicator.mapping.sql import MAPPED
from replicator.settings import Settings
from tests.integration.conftest import StackInfo, new_database, prepare_table

pytestmark = pytest.mark.integration

#: Archived with a NULL status and a REAL the mapping rounds: what a rollback must keep.
ARCHIVED = (
    "INSERT INTO workflow_processes (id, workflow_name, message, max_turns, session_name,"
    " status, result, total_cost, created_at) VALUES (%s, 'w', 'm', 3, 's', NULL, NULL,"
    " 0.123456, '2024-05-06 07:08:09.123456')"
)
ON_CONFLICT = (
    "INSERT with ON CONFLICT clause cannot be used with table that has INSERT or UPDATE rules"
)


def database(stack: StackInfo, ids: list[str]) -> tuple[str, Settings]:
    """A database of its own: both tables, the ``ids`` archived as :data:`ARCHIVED`, the
    target equal to them (as the stream left it); with the settings of its cutover."""
    dsn = new_database(stack, "coview")
    apply_source_schema(dsn)
    prepare_table(dsn, "workflow_runs")
    copy = sql.SQL("INSERT INTO workflow_runs ({cols}) SELECT {mapped} FROM workflow_processes p")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for rid in ids:
            conn.execute(ARCHIVED, [rid])
        conn.execute(
            copy.format(
                cols=sql.SQL(", ").join(map(sql.Identifier, TARGET_COLUMNS)),
                mapped=sql.SQL(", ").join(MAPPED[c] for c in TARGET_COLUMNS),
            )
        )
    return dsn, stack.with_target(dsn).settings(source_dsn=dsn, target_dsn=dsn)


def cut_over(stack: StackInfo, ids: list[str]) -> tuple[str, Settings]:
    dsn, settings = database(stack, ids)
    switch.cut_over(settings, lock_timeout_s=1.0)
    assert relkind(dsn) == "v"
    return dsn, settings


def relkind(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'workflow_processes'")
        return str(row.fetchone()[0])  # type: ignore[index]


def legacy_rows(dsn: str) -> dict[str, dict[str, str | None]]:
    """Every row of ``workflow_processes``, each column as its text (a REAL's text is its
    exact value: the session prints the shortest text that reads back the same)."""
    cols = ", ".join(f"{c}::text" for c in SOURCE_COLUMNS)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(f"SELECT {cols} FROM workflow_processes").fetchall()
    return {r[0]: dict(zip(SOURCE_COLUMNS, r, strict=True)) for r in rows}


# ------------------------------------------------------------------ INSERT ... ON CONFLICT

FORMS = {
    "DO NOTHING, a new id": "INSERT INTO workflow_processes (id, workflow_name, message)"
    " VALUES ('oc-new', 'w', 'new') ON CONFLICT DO NOTHING",
    "DO NOTHING, an existing id": "INSERT INTO workflow_processes (id, workflow_name, message)"
    " VALUES ('oc-1', 'w', 'new') ON CONFLICT DO NOTHING",
    "(id) DO NOTHING": "INSERT INTO workflow_processes (id, workflow_name, message)"
    " VALUES ('oc-1', 'w', 'new') ON CONFLICT (id) DO NOTHING",
    "(id) DO UPDATE": "INSERT INTO workflow_processes (id, workflow_name, message)"
    " VALUES ('oc-1', 'w', 'new') ON CONFLICT (id) DO UPDATE SET message = EXCLUDED.message",
    "(id) WHERE ... DO UPDATE": "INSERT INTO workflow_processes (id, workflow_name, message)"
    " VALUES ('oc-1', 'w', 'new') ON CONFLICT (id) WHERE id IS NOT NULL"
    " DO UPDATE SET message = EXCLUDED.message",
}


def test_every_insert_on_conflict_through_the_view_is_refused_with_one_error(
    stack: StackInfo,
) -> None:
    dsn, _ = database(stack, ["oc-1"])
    with psycopg.connect(dsn, autocommit=True) as conn:  # the table, before the cutover
        assert conn.execute(FORMS["DO NOTHING, an existing id"]).rowcount == 0
    dsn, _ = cut_over(stack, ["oc-1"])
    before = legacy_rows(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for form, statement in FORMS.items():
            with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
                conn.execute(statement)
            assert refused.value.sqlstate == "0A000", form
            assert refused.value.diag.message_primary == ON_CONFLICT, form
        # a named constraint is looked up (and not found) before anything else
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute(
                "INSERT INTO workflow_processes (id, workflow_name, message) VALUES"
                " ('oc-1', 'w', 'new') ON CONFLICT ON CONSTRAINT workflow_processes_pkey"
                " DO NOTHING"
            )
        # the statements without the clause still work
        conn.execute(
            "INSERT INTO workflow_processes (id, workflow_name, message) VALUES ('oc-2', 'w', 'm')"
        )
        cur = conn.execute("UPDATE workflow_processes SET message = 'u' WHERE id = 'oc-2'")
        assert cur.rowcount == 1
    after = legacy_rows(dsn)
    assert after.pop("oc-2")["message"] == "u"
    assert after == before  # nothing was written by any refused form


# ------------------------------------------------------------------ racing an id change


def waiting(dsn: str, pid: int) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", [pid])
        return row.fetchone() != (0,)


def race(dsn: str, first: str, second: str) -> tuple[str | int, dict[str, int]]:
    """``first`` runs in a transaction left open; ``second``, on another connection, then
    meets its row lock; ``first`` commits.  What ``second`` got (its SQLSTATE, or the rows
    it counted) and the rows' ``max_turns`` afterwards."""
    out: dict[str, Any] = {}
    with psycopg.connect(dsn) as one, psycopg.connect(dsn, autocommit=True) as two:
        one.execute(first)

        def run() -> None:
            try:
                out["rows"] = two.execute(second).rowcount
            except psycopg.Error as exc:
                out["error"] = exc.sqlstate

        pid = two.info.backend_pid
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        until(lambda: waiting(dsn, pid) or not thread.is_alive())
        one.commit()
        thread.join(30)
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT id, max_turns FROM workflow_processes WHERE id LIKE 'mv-%'")
        stored = {str(r[0]): int(r[1]) for r in rows}
    return out.get("error", out.get("rows", "nothing")), stored


def until(what: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


MOVE = "UPDATE workflow_processes SET id = 'mv-b' WHERE id = 'mv-a'"
#: statement -> what the legacy table does when it meets MOVE's lock (measured below)
RACERS = {
    "UPDATE ... WHERE id = <old id>": (
        "UPDATE workflow_processes SET max_turns = max_turns + 1 WHERE id = 'mv-a'",
        (0, {"mv-b": 3}),  # re-checked on the moved row: no longer matches
    ),
    "UPDATE ... WHERE <another column>": (
        "UPDATE workflow_processes SET max_turns = max_turns + 1 WHERE message = 'm'",
        (1, {"mv-b": 4}),  # followed to the moved row, re-computed there
    ),
    "DELETE ... WHERE <another column>": (
        "DELETE FROM workflow_processes WHERE message = 'm'",
        (1, {}),
    ),
}


@pytest.mark.parametrize("racer", sorted(RACERS))
def test_a_statement_racing_an_id_change_fails_with_40001(stack: StackInfo, racer: str) -> None:
    statement, on_the_table = RACERS[racer]
    dsn, _ = database(stack, ["mv-a"])
    assert race(dsn, MOVE, statement) == on_the_table  # what READ COMMITTED does
    for mover in (MOVE, "UPDATE workflow_runs SET run_id = 'mv-b' WHERE run_id = 'mv-a'"):
        dsn, _ = cut_over(stack, ["mv-a"])
        # the view cannot re-check its statement on the moved row: refused, nothing written
        assert race(dsn, mover, statement) == ("40001", {"mv-b": 3}), mover


def test_a_row_deleted_meanwhile_is_still_skipped(stack: StackInfo) -> None:
    """Also under an id that a row was moved away from before (the id is a row's again)."""
    dsn, _ = cut_over(stack, ["mv-a"])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(MOVE)
        conn.execute("UPDATE workflow_processes SET id = 'mv-c' WHERE id = 'mv-b'")
        conn.execute(
            "INSERT INTO workflow_processes (id, workflow_name, message, max_turns)"
            " VALUES ('mv-a', 'w', 'm', 3)"
        )
    delete = "DELETE FROM workflow_processes WHERE id = 'mv-a'"
    update = "UPDATE workflow_processes SET max_turns = 9 WHERE id = 'mv-a'"
    assert race(dsn, delete, update) == (0, {"mv-c": 3})  # UPDATE 0, as on the table


# ------------------------------------------------------------------ the rollback


class Writers:
    """Connections writing one column each (the column's name as its value's source) of
    the same rows through the view, at once, each write retried on 40001 until it is
    acknowledged; the last acknowledged value of each (row, column)."""

    COLUMNS = ("message", "git_branch", "execution_time", "max_turns")

    def __init__(self, dsn: str, ids: list[str], rounds: int = 15) -> None:
        self.dsn, self.ids, self.rounds = dsn, ids, rounds
        self.last: dict[tuple[str, str], Any] = {}
        self.refused = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        threads = [threading.Thread(target=self._write, args=(c,)) for c in self.COLUMNS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

    def _write(self, column: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for n in range(self.rounds):
                for rid in self.ids:
                    value: Any = n if column in ("execution_time", "max_turns") else f"{column}{n}"
                    self._until_acknowledged(conn, column, rid, value)

    def _until_acknowledged(
        self, conn: psycopg.Connection[Any], column: str, rid: str, value: Any
    ) -> None:
        for _ in range(1000):
            try:
                conn.execute(
                    sql.SQL("UPDATE workflow_processes SET {} = %s WHERE id = %s").format(
                        sql.Identifier(column)
                    ),
                    [value, rid],
                )
            except psycopg.errors.SerializationFailure:
                with self.lock:
                    self.refused += 1
                continue
            except psycopg.Error as exc:
                self.errors.append(str(exc))
                return
            with self.lock:
                self.last[(rid, column)] = value
            return
        self.errors.append(f"{rid}.{column} never acknowledged")


def test_a_rollback_restores_every_column_the_application_did_not_write(
    stack: StackInfo,
) -> None:
    shared = [f"rb-many-{n}" for n in range(4)]
    ids = ["rb-time", "rb-back", "rb-untouched", "rb-direct", "rb-cost", "rb-moved", *shared]
    dsn, settings = database(stack, ids)
    archived = legacy_rows(dsn)
    assert archived["rb-time"]["status"] is None and archived["rb-time"]["total_cost"] == "0.123456"
    switch.cut_over(settings, lock_timeout_s=1.0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE workflow_processes SET execution_time = 42 WHERE id = 'rb-time'")
        for status in ("running", "pending"):  # written, then written back: written
            conn.execute("UPDATE workflow_processes SET status = %s WHERE id = 'rb-back'", [status])
        conn.execute("UPDATE workflow_runs SET priority = 'high' WHERE run_id = 'rb-direct'")
        conn.execute("UPDATE workflow_runs SET total_cost = 2.5 WHERE run_id = 'rb-cost'")
        conn.execute("UPDATE workflow_processes SET id = 'rb-moved-to' WHERE id = 'rb-moved'")
        conn.execute(
            "INSERT INTO workflow_processes (id, workflow_name, message, status)"
            " VALUES ('rb-new', 'w', 'm', NULL)"
        )
        shown = legacy_rows(dsn)
    writers = Writers(dsn, shared)
    writers.run()
    assert not writers.errors, writers.errors[:3]
    print(f"writes of one column each, at once: {writers.refused} refused with 40001, retried")
    rollback.roll_back(settings, lock_timeout_s=1.0)
    assert relkind(dsn) == "r"
    restored = legacy_rows(dsn)

    def written(rid: str, **values: Any) -> dict[str, str | None]:
        row = dict(archived[rid])
        row.update({c: None if v is None else str(v) for c, v in values.items()})
        return row

    assert restored["rb-time"] == written("rb-time", execution_time=42)
    assert restored["rb-back"] == written("rb-back", status="pending")
    assert restored["rb-untouched"] == archived["rb-untouched"]
    assert restored["rb-direct"] == archived["rb-direct"]  # no legacy column was written
    assert restored["rb-cost"] == written("rb-cost", total_cost=2.5)
    assert "rb-moved" not in restored
    assert restored["rb-moved-to"] == shown["rb-moved-to"]  # a new row: as the view showed it
    assert restored["rb-new"] == shown["rb-new"] and restored["rb-new"]["status"] == "pending"
    for rid in shared:
        values = {c: writers.last[(rid, c)] for c in Writers.COLUMNS}
        assert restored[rid] == written(rid, **values), rid
