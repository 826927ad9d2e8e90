"""Phases 3 and 4 of the plan on a real stack, as an operator runs them: ``cutover`` and
``rollback`` while an application keeps writing, every acknowledged write checked in the
table it must be in afterwards; ``replicator run`` idle through the cutover and
replicating again after the rollback.  On the session's own stack (own_stack.py); the
test that finalizes runs last because nothing can follow it."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import psycopg
import pytest

from replicator.cutover.legacy import legacy_row
from replicator.local.processes import free_port
from replicator.mapping.columns import SOURCE_COLUMNS, TARGET_COLUMNS
from tests.integration.own_stack import OwnStack, converged, wait_for

pytestmark = pytest.mark.integration

LEGACY_APP = "legacy_app"  # a role of the application: rights on workflow_processes only
EDGE_ROWS = {  # untouched through cutover and rollback: must come back byte for byte
    "co-null": "INSERT INTO workflow_processes (id, workflow_name, message, max_turns, status,"
    " total_cost) VALUES ('co-null', 'w', 'm', NULL, NULL, 0.1)",
    "co-text": "INSERT INTO workflow_processes (id, workflow_name, message, result, error_message,"
    " total_cost, created_at) VALUES ('co-text', 'w', 'm', E'say \"hi\"\\n\\t{}', '',"
    " 123456.79, '1969-07-20 20:17:40.123456')",
}


class Application:
    """Inserts, updates and deletes rows of its own (``co-w-*``) in small transactions
    until stopped; remembers what each acknowledged write left, and every error."""

    def __init__(self, dsn: str, seed: int) -> None:
        self.dsn = dsn
        self.rng = random.Random(seed)
        self.expected: dict[str, tuple[str, str | None] | None] = {}
        self.errors: list[str] = []
        self.writes = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()  # held for each write: checks see what was acknowledged
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Application:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            n = 0
            while not self.stop.is_set():
                n += 1
                live = [k for k, v in self.expected.items() if v is not None]
                op = self.rng.choice("iiuud") if live else "i"
                with self.lock:
                    self._write(conn, op, live, n)
                time.sleep(0.003)

    def _write(self, conn: psycopg.Connection[Any], op: str, live: list[str], n: int) -> None:
        try:
            if op == "i":
                rid = f"co-w-{self.rng.getrandbits(40):010x}"
                conn.execute(
                    "INSERT INTO workflow_processes (id, workflow_name, message)"
                    " VALUES (%s, 'app', %s)",
                    [rid, f"m{n}"],
                )
                self.expected[rid] = (f"m{n}", None)
            elif op == "u":
                rid = self.rng.choice(live)
                cur = conn.execute(
                    "UPDATE workflow_processes SET message = %s, result = %s WHERE id = %s",
                    [f"m{n}", f"r{n}", rid],
                )
                assert cur.rowcount == 1, f"update of {rid} touched {cur.rowcount} rows"
                self.expected[rid] = (f"m{n}", f"r{n}")
            else:
                rid = self.rng.choice(live)
                cur = conn.execute("DELETE FROM workflow_processes WHERE id = %s", [rid])
                assert cur.rowcount == 1, f"delete of {rid} touched {cur.rowcount} rows"
                self.expected[rid] = None
            self.writes += 1
        except (psycopg.Error, AssertionError) as exc:
            self.errors.append(f"{op}: {exc}")


def query(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def slot_exists(dsn: str) -> bool:
    return bool(query(dsn, "SELECT 1 FROM pg_replication_slots"))


def check_acknowledged(dsn: str, app: Application) -> None:
    """Every acknowledged write is what workflow_processes holds now."""
    with app.lock:
        expected = dict(app.expected)
        rows = dict(
            (r[0], (r[1], r[2]))
            for r in query(
                dsn, "SELECT id, message, result FROM workflow_processes WHERE id LIKE 'co-w-%'"
            )
        )
    wrong = {k: (v, rows.get(k)) for k, v in expected.items() if rows.get(k) != v}
    assert not wrong, f"{len(wrong)} acknowledged writes not as written: {list(wrong.items())[:5]}"


def view_matches_inverse(dsn: str) -> None:
    """The compatibility view shows every workflow_runs row as legacy_row() says (both read
    in one snapshot: the application keeps writing)."""
    json_cols = {"result_data", "error_details", "tags", "metadata", "progress_data"}
    cols = ", ".join(
        f"{c}::text" if c in json_cols | {"resource_usage"} else c for c in TARGET_COLUMNS
    )
    legacy = ", ".join("total_cost::float8" if c == "total_cost" else c for c in SOURCE_COLUMNS)
    with psycopg.connect(dsn) as conn:  # float8: the REAL value exactly
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        runs = conn.execute(f"SELECT {cols} FROM workflow_runs").fetchall()
        view = {r[0]: r for r in conn.execute(f"SELECT {legacy} FROM workflow_processes")}
    expected = {
        r[0]: tuple(legacy_row(dict(zip(TARGET_COLUMNS, r, strict=True))).values()) for r in runs
    }
    wrong = [k for k in expected if view.get(k) != expected[k]]
    assert not wrong and len(view) == len(expected), [(view.get(k), expected[k]) for k in wrong[:3]]


def endpoint(port: int, path: str) -> tuple[int, str]:
    """The status and body of ``path`` on ``replicator run``'s metrics port (0: no answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def cut_over_gauge(port: int) -> float | None:
    found = re.search(r"^replicator_cut_over (\S+)$", endpoint(port, "/metrics")[1], re.M)
    return float(found.group(1)) if found else None


def run_log(own_stack: OwnStack) -> str:
    return (own_stack.home / "run.log").read_text()


def idle_after_the_cutover(own_stack: OwnStack, run: subprocess.Popen, port: int) -> None:
    """``run`` stays up after the cutover and says so: ``/readyz`` 200 "cut over" with what
    to do, ``/healthz`` 200, ``replicator_cut_over`` 1, the log once."""
    wait_for(lambda: endpoint(port, "/readyz")[1].startswith("cut over"))
    status, body = endpoint(port, "/readyz")
    assert status == 200 and "`replicator rollback` reopens the stream" in body, body
    assert endpoint(port, "/healthz")[0] == 200
    assert cut_over_gauge(port) == 1
    said = re.findall(r"^.* INFO +cut over: the stream .*$", run_log(own_stack), re.M)
    assert len(said) == 1 and "Retire its deployment" in said[0], said
    assert run.poll() is None, run_log(own_stack)[-3000:]


def stopped(own_stack: OwnStack, run: subprocess.Popen) -> None:
    """SIGTERM ends an idle ``run`` with exit 0, without waiting for its next check of the
    positions (every 10 s)."""
    run.send_signal(signal.SIGTERM)
    assert run.wait(8) == 0, run_log(own_stack)[-3000:]


def a_consumer_started_after_the_cutover_idles(own_stack: OwnStack) -> None:
    """A pod started (or restarted) after the cutover: it stays up, idle and ready, instead
    of ending and being started again in a loop; ``run --exit-when-idle`` (a Job) ends at
    once, exit 0, before it joins the group."""
    port, started = free_port(), time.monotonic()
    run = own_stack.spawn_run(port)
    try:
        idle_after_the_cutover(own_stack, run, port)
        time.sleep(max(0.0, started + 8 - time.monotonic()))  # it used to end within 5 s
        assert run.poll() is None, run_log(own_stack)[-3000:]
        idle_after_the_cutover(own_stack, run, port)  # still said once
        assert not re.search(r" INFO +(replicating|partitions assigned)  ", run_log(own_stack))
    finally:
        stopped(own_stack, run)
    job = own_stack.cli("run", "--exit-when-idle", "30", "--log-format", "human")
    assert "cut over; exiting" in job.stderr, job.stderr
    assert not re.search(r" INFO +replicating  ", job.stderr), job.stderr  # no group joined


def test_cutover_and_rollback_while_the_application_writes(own_stack: OwnStack) -> None:
    cli, owner = own_stack.cli, own_stack.settings["REPLICATOR_ADMIN_SOURCE_DSN"]
    with psycopg.connect(owner, autocommit=True) as conn:
        for statement in EDGE_ROWS.values():
            conn.execute(statement)
        conn.execute(f"DROP ROLE IF EXISTS {LEGACY_APP}")
        conn.execute(f"CREATE ROLE {LEGACY_APP} LOGIN")
        conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON workflow_processes TO {LEGACY_APP}")
    legacy_dsn = psycopg.conninfo.make_conninfo(owner, user=LEGACY_APP)
    edge = "SELECT p::text FROM workflow_processes p WHERE id IN ('co-null', 'co-text') ORDER BY id"
    untouched = query(owner, edge)
    port = free_port()
    run = own_stack.spawn_run(port)
    try:
        converged(own_stack)
        # phase 3 alone: readers compare the legacy shape while the table takes the writes
        cli("cutover", "--readers-view", "workflow_processes_compat")
        assert query(owner, "SELECT count(*) FROM workflow_processes_compat") == query(
            owner, "SELECT count(*) FROM workflow_processes"
        )
        assert query(legacy_dsn, "SELECT id FROM workflow_processes_compat WHERE id = 'co-null'")
        with (  # read-only for every role, the owner's too
            psycopg.connect(owner, autocommit=True) as conn,
            pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
        ):
            conn.execute(
                "INSERT INTO workflow_processes_compat (id, workflow_name, message)"
                " VALUES ('co-ro', 'w', 'm')"
            )
        for taken in ("pg_class", "workflow_runs_versions"):
            refused = cli("cutover", "--readers-view", taken, ok=False)
            assert refused.returncode == 2 and "is taken" in refused.stderr, refused.stderr
        cli("cutover", "--readers-view", "compat_to_drop")
        cli("cutover", "--drop-readers-view", "compat_to_drop")
        assert query(owner, "SELECT to_regclass('compat_to_drop')") == [(None,)]
        # something that would follow the renamed table blocks the switch, named
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute("CREATE VIEW legacy_report AS SELECT id FROM workflow_processes")
        for argv in (("cutover", "--dry-run"), ("cutover",)):
            refused = cli(*argv, ok=False)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "FAIL  nothing depends on it: view legacy_report" in refused.stdout
        assert query(
            owner, "SELECT relkind FROM pg_class WHERE relname = 'workflow_processes'"
        ) == [("r",)]
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute("DROP VIEW legacy_report")
        with Application(owner, seed=21) as app:
            wait_for(lambda: app.writes > 100)
            dry = cli("cutover", "--dry-run")
            assert dry.stdout.rstrip().endswith("ready"), dry.stdout
            done = cli("cutover")
            blocked = re.search(r"waited at most (\d+) ms", done.stdout)
            assert blocked, done.stdout
            print(f"cutover: {done.stdout}")
            at_cutover = app.writes
            wait_for(lambda: app.writes > at_cutover + 150)
            # cut over: the slot is gone, the replicator idles, verify knows why
            assert not slot_exists(owner)
            dry = cli("cutover", "--dry-run").stdout  # what is true, not readiness advice
            assert "rollback --dry-run" in dry and "replicator run` running" not in dry, dry
            idle_after_the_cutover(own_stack, run, port)
            after_the_cutover_every_command_says_what_is_true(own_stack)
            assert query(
                owner, "SELECT relkind FROM pg_class WHERE relname = 'workflow_processes'"
            ) == [("v",)]
            # the application's own role writes through the view, with no rights on workflow_runs
            with psycopg.connect(legacy_dsn, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO workflow_processes (id, workflow_name, message)"
                    " VALUES ('co-role', 'w', 'm')"
                )
                conn.execute("UPDATE workflow_processes SET status = 'done' WHERE id = 'co-role'")
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("SELECT 1 FROM workflow_runs")
            with psycopg.connect(owner, autocommit=True) as conn:  # an updated application
                conn.execute(
                    "INSERT INTO workflow_runs (run_id, workflow_type, description, result_data)"
                    " VALUES ('co-direct', 'new', 'd', '{\"a\": 1}')"
                )
                with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                    conn.execute("DELETE FROM workflow_processes_archive WHERE id = 'co-null'")
            view_matches_inverse(owner)
            check_acknowledged(owner, app)
            rolled = cli("rollback")
            print(f"rollback: {rolled.stdout}")
            at_rollback = app.writes
            wait_for(lambda: app.writes > at_rollback + 150)
        assert not app.errors, app.errors[:5]
        assert query(owner, edge) == untouched  # byte for byte: NULL status, the REAL value
        check_acknowledged(owner, app)
        assert query(
            owner,
            "SELECT status, result FROM workflow_processes"
            " WHERE id IN ('co-role', 'co-direct') ORDER BY id",
        ) == [
            ("pending", '{"a": 1}'),
            ("done", None),
        ]
        assert slot_exists(owner)
        assert cli("connector", "status", ok=False).returncode == 0
        # the consumer that idled through the cutover replicates again by itself
        wait_for(lambda: endpoint(port, "/readyz") == (200, "ready\n"))
        assert cut_over_gauge(port) == 0 and run.poll() is None
        assert "stream was reopened" in run_log(own_stack)
        converged(own_stack)
        assert cli("verify").returncode == 0
        refused = cli("rollback", ok=False)
        assert refused.returncode == 1 and "FAIL" in refused.stdout
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
            assert run.wait(60) == 0, (own_stack.home / "run.log").read_text()[-3000:]


def after_the_cutover_every_command_says_what_is_true(own_stack: OwnStack) -> None:
    """Between the cutover and the rollback: status and set-up commands know the cutover;
    verify compares the archive with workflow_runs on the rows not written since."""
    cli, owner = own_stack.cli, own_stack.settings["REPLICATOR_ADMIN_SOURCE_DSN"]
    verified = cli("verify", "--json")  # the service role reads the record and the log
    report = json.loads(verified.stdout)
    assert report["source"]["table"] == "workflow_processes_archive", report
    assert report["status"] == "in_sync" and report["changed_since_cutover"] > 0, report
    # a row changed behind the change log's back (triggers off) is drift, and is named
    untouched = "co-text"
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        (was,) = conn.execute(
            "SELECT description FROM workflow_runs WHERE run_id = %s", [untouched]
        ).fetchone()
        conn.execute(
            "UPDATE workflow_runs SET description = 'tampered' WHERE run_id = %s", [untouched]
        )
        try:
            drift = cli("verify", ok=False)
            assert drift.returncode == 1 and untouched in drift.stdout, drift.stdout
        finally:
            conn.execute(
                "UPDATE workflow_runs SET description = %s WHERE run_id = %s", [was, untouched]
            )
    # setting up again: the connector is not registered, its slot not re-created
    up = cli("stack", "up")
    assert "not registered" in up.stderr and "cut over at" in up.stderr, up.stderr
    assert "compatibility view: left as it is" in up.stderr, up.stderr
    assert not slot_exists(owner)
    status = cli("stack", "status")  # exit 0: the connector is gone by design
    assert "not registered, by design" in status.stdout, status.stdout
    connector = cli("connector", "status")
    assert "by design" in connector.stdout and "rollback" in connector.stdout, connector.stdout
    refused = cli("connector", "apply", ok=False)
    assert refused.returncode == 3 and "refused" in refused.stderr, refused.stderr
    assert not slot_exists(owner)
    assessed = cli("assess", "--runs", "1", ok=False)
    assert assessed.returncode in (0, 1), assessed.stdout + assessed.stderr
    assert "the migrated state" in assessed.stdout and "stream              closed" in (
        assessed.stdout
    )
    assert "PASS  zero data loss" in assessed.stdout, assessed.stdout
    assert "consumer lag" not in assessed.stdout


class Incrementer:
    """Several connections incrementing a few rows through ``workflow_processes`` at once
    (the lost-update pattern); counts what was acknowledged, per row."""

    def __init__(self, dsn: str, ids: list[str], threads: int = 4) -> None:
        self.dsn, self.ids = dsn, ids
        self.acked = dict.fromkeys(ids, 0)
        self.refused: list[str] = []  # SQLSTATEs of failed statements
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]

    def __enter__(self) -> Incrementer:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self, n: int) -> None:
        rng = random.Random(n)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                rid = rng.choice(self.ids)
                try:
                    cur = conn.execute(
                        "UPDATE workflow_processes SET max_turns = max_turns + 1 WHERE id = %s",
                        [rid],
                    )
                except psycopg.Error as exc:
                    with self.lock:
                        self.refused.append(exc.sqlstate or "?")
                    continue
                if cur.rowcount == 1:
                    with self.lock:
                        self.acked[rid] += 1


def claim_all(dsn: str, ids: list[str], workers: int = 4) -> dict[str, list[str]]:
    """Workers claiming pending runs (``UPDATE ... WHERE status = 'pending'``) at once, each
    trying every run; the workers whose claim of a run was acknowledged."""
    won: dict[str, list[str]] = {rid: [] for rid in ids}
    lock = threading.Lock()

    def worker(name: str) -> None:
        order = list(ids)
        random.Random(name).shuffle(order)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for rid in order:
                try:
                    cur = conn.execute(
                        "UPDATE workflow_processes SET status = 'running', session_name = %s"
                        " WHERE id = %s AND status = 'pending'",
                        [name, rid],
                    )
                except psycopg.errors.SerializationFailure:
                    continue  # refused, never applied to a newer row
                if cur.rowcount == 1:
                    with lock:
                        won[rid].append(name)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return won


def claim_with_skip_locked(dsn: str, workers: int = 4) -> dict[str, list[str]]:
    """The job-claim pattern through the view: each worker takes the next pending ``sk-``
    run with ``FOR UPDATE SKIP LOCKED`` and marks it, until none is left."""
    claimed: dict[str, list[str]] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        with psycopg.connect(dsn) as conn:
            while True:
                try:
                    row = conn.execute(
                        "SELECT id FROM workflow_processes WHERE id LIKE 'sk-%'"
                        " AND status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
                    ).fetchone()
                    if row is None:
                        conn.commit()
                        return
                    conn.execute(
                        "UPDATE workflow_processes SET status = 'running', session_name = %s"
                        " WHERE id = %s",
                        [name, row[0]],
                    )
                    conn.commit()
                except psycopg.Error as exc:
                    conn.rollback()
                    errors.append(str(exc))
                    return
                with lock:
                    claimed.setdefault(row[0], []).append(name)

    threads = [threading.Thread(target=worker, args=(f"s{n}",)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    return claimed


def test_concurrent_writers_through_the_view_lose_nothing(own_stack: OwnStack) -> None:
    """Several application connections through the compatibility view, then through the
    table again after the rollback: every acknowledged increment is counted once, a run
    is claimed by one worker at most, RETURNING shows what is stored, and errors speak
    of the legacy table."""
    cli, owner = own_stack.cli, own_stack.settings["REPLICATOR_ADMIN_SOURCE_DSN"]
    counters = [f"cc-{n}" for n in range(5)]
    runs = [f"cl-{n:02d}" for n in range(30)]
    queue = [f"sk-{n:02d}" for n in range(40)]
    doomed = [f"cd-{n}" for n in range(3)]
    with psycopg.connect(owner, autocommit=True) as conn:
        for rid in counters + runs + queue + doomed:
            conn.execute(
                "INSERT INTO workflow_processes (id, workflow_name, message, max_turns, status)"
                " VALUES (%s, 'w', 'm', 0, 'pending')",
                [rid],
            )
    port = free_port()
    run = own_stack.spawn_run(port)
    try:
        converged(own_stack)
        cli("cutover")
        idle_after_the_cutover(own_stack, run, port)
        stopped(own_stack, run)
        # the consumer knows its own stream was closed: no warning about a stranger
        assert "moved by another writer" not in run_log(own_stack)
        a_consumer_started_after_the_cutover_idles(own_stack)
        with Incrementer(owner, counters) as inc:
            wait_for(lambda: sum(inc.acked.values()) > 300)
        stored = dict(
            query(owner, "SELECT id, max_turns FROM workflow_processes WHERE id LIKE 'cc-%'")
        )
        assert stored == inc.acked, (stored, inc.acked)  # nothing acknowledged lost or doubled
        assert set(inc.refused) <= {"40001"}, inc.refused[:5]
        print(
            f"increments through the view: {sum(inc.acked.values())} acknowledged,"
            f" {len(inc.refused)} refused with 40001"
        )
        won = claim_all(owner, runs)
        assert all(len(names) <= 1 for names in won.values()), won
        holders = dict(
            query(owner, "SELECT id, session_name FROM workflow_processes WHERE id LIKE 'cl-%'")
        )
        assert {rid: names[0] for rid, names in won.items() if names} == {
            rid: who for rid, who in holders.items() if who is not None
        }
        # conditional deletes racing increments: a delete is acknowledged only on a row whose
        # newest value meets its condition, and no increment is acknowledged after it
        deleted: dict[str, int] = {}
        with Incrementer(owner, doomed, threads=3) as inc, psycopg.connect(owner) as conn:
            deadline = time.monotonic() + 60
            while len(deleted) < len(doomed) and time.monotonic() < deadline:
                for rid in set(doomed) - set(deleted):
                    try:
                        row = conn.execute(
                            "DELETE FROM workflow_processes WHERE id = %s AND max_turns >= 20"
                            " RETURNING max_turns",
                            [rid],
                        ).fetchone()
                        conn.commit()
                    except psycopg.errors.SerializationFailure:
                        conn.rollback()
                        continue
                    if row is not None:
                        deleted[rid] = row[0]
                time.sleep(0.01)
        assert sorted(deleted) == doomed
        assert all(value >= 20 for value in deleted.values()), deleted
        assert deleted == {rid: inc.acked[rid] for rid in doomed}, (deleted, inc.acked)
        assert query(owner, "SELECT id FROM workflow_processes WHERE id LIKE 'cd-%'") == []
        claimed = claim_with_skip_locked(owner)
        assert sorted(claimed) == queue and all(len(v) == 1 for v in claimed.values())
        with psycopg.connect(owner, autocommit=True) as conn:
            (cost,) = conn.execute(
                "UPDATE workflow_processes SET total_cost = 1.23456 WHERE id = 'cc-0'"
                " RETURNING total_cost::float8"
            ).fetchone()
            (stored_cost,) = conn.execute(
                "SELECT total_cost::float8 FROM workflow_processes WHERE id = 'cc-0'"
            ).fetchone()
            assert cost == stored_cost and abs(cost - 1.2346) < 1e-6
            (status,) = conn.execute(
                "INSERT INTO workflow_processes (id, workflow_name, message, status)"
                " VALUES ('cc-null', 'w', 'm', NULL) RETURNING status"
            ).fetchone()
            assert status == "pending"
            with pytest.raises(psycopg.errors.UniqueViolation) as dup:
                conn.execute(
                    "INSERT INTO workflow_processes (id, workflow_name, message)"
                    " VALUES ('cc-0', 'w', 'm')"
                )
            assert dup.value.diag.table_name == "workflow_processes"
            assert dup.value.diag.constraint_name == "workflow_processes_pkey"
            assert "workflow_runs" not in str(dup.value)
            assert len(dup.value.diag.context or "") < 500
        # nothing applies an old event over the application's writes any more
        for argv in (("replay", "--into", "workflow_runs"), ("dlq", "redrive")):
            refused = cli(*argv, ok=False)
            assert refused.returncode == 3, refused.stdout + refused.stderr
            assert "closed by the cutover" in refused.stderr, refused.stderr
        # the rollback while the increments go on: through the view, then the table; its
        # last step (the connector) fails the first time, and a second rollback resumes it
        dead = f"http://127.0.0.1:{free_port()}"
        with Incrementer(owner, counters) as inc:
            wait_for(lambda: sum(inc.acked.values()) > 100)
            failed = cli("rollback", ok=False, REPLICATOR_CONNECT_URL=dead)
            assert failed.returncode != 0 and "rolled back at LSN" in failed.stdout, failed.stdout
            at_rollback = sum(inc.acked.values())
            wait_for(lambda: sum(inc.acked.values()) > at_rollback + 100)
            resumed = cli("rollback")
            assert "registering the connector" in resumed.stdout, resumed.stdout
        assert query(
            owner, "SELECT relkind FROM pg_class WHERE relname = 'workflow_processes'"
        ) == [("r",)]
        after = dict(
            query(
                owner,
                "SELECT id, max_turns FROM workflow_processes WHERE id = ANY(%s)",
                [counters],
            )
        )
        assert after == {rid: stored[rid] + inc.acked[rid] for rid in counters}, after
        run = own_stack.spawn_run(free_port())
        converged(own_stack)
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
            assert run.wait(60) == 0, (own_stack.home / "run.log").read_text()[-3000:]


def test_finalize_ends_the_rollback_window(own_stack: OwnStack) -> None:
    cli, owner = own_stack.cli, own_stack.settings["REPLICATOR_ADMIN_SOURCE_DSN"]
    port = free_port()
    run = own_stack.spawn_run(port)
    try:
        converged(own_stack)
        cli("cutover")
        idle_after_the_cutover(own_stack, run, port)
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
            assert run.wait(60) == 0, run_log(own_stack)[-3000:]
    out = cli("cutover", "--finalize").stdout
    assert "kept" in out, out
    assert query(owner, "SELECT count(*) FROM pg_publication") == [(0,)]
    assert query(owner, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'replicator_log_%'") == [
        (0,)
    ]
    assert query(owner, "SELECT state FROM replicator_cutover ORDER BY id DESC LIMIT 1") == [
        ("finalized",)
    ]
    refused = cli("rollback", ok=False)
    assert refused.returncode == 3 and "closed the rollback window" in refused.stderr
    # run again, each says what is true and exits 0, as `cutover` twice does
    assert "finalized already" in cli("cutover", "--finalize").stdout
    assert "nothing left to do" in cli("cutover").stdout
    dry = cli("cutover", "--dry-run").stdout
    assert "the rollback window is closed" in dry and "replicator run` running" not in dry
    # setting up again after the finalize: no publication, no slot, no connector come back
    up = cli("stack", "up")
    assert "not registered" in up.stderr and "finalized" in up.stderr, up.stderr
    assert query(owner, "SELECT count(*) FROM pg_publication") == [(0,)]
    assert not slot_exists(owner)
    status = cli("stack", "status")  # exit 0: everything is as it should be
    assert "not registered, by design" in status.stdout, status.stdout
    verified = cli("verify", "--json")
    assert json.loads(verified.stdout)["status"] == "finalized", verified.stdout
    assessed = cli("assess", "--runs", "1", ok=False)
    assert assessed.returncode in (0, 1), assessed.stdout + assessed.stderr
    assert "n/a   zero data loss: not measured" in assessed.stdout, assessed.stdout
    with psycopg.connect(owner, autocommit=True) as conn:  # the view still serves the application
        conn.execute("UPDATE workflow_processes SET message = 'after' WHERE id = 'co-null'")
    assert query(owner, "SELECT description FROM workflow_runs WHERE run_id = 'co-null'") == [
        ("after",)
    ]
    assert query(owner, "SELECT count(*) FROM workflow_processes_archive") > [(0,)]
