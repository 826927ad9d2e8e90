"""The parts of the fault campaign (bench/chaos.py): the application and its model, the
checker of the model against the target, the replicator processes and the version
watcher.

The application: ``threads`` connections writing ``workflow_processes`` as its owner,
each on ids of its own (``cx-<thread>-<n>``), so that the model of every acknowledged
write is exact: inserts (some with a large TOASTed ``message``, some with NULLs),
absolute updates, increments, updates of a TOASTed row that do not touch the large
column, deletes, re-inserts of a deleted id, and transactions of several of these.  The
model keeps, per id, the whole source row as the last acknowledged transaction left it
(read inside that transaction), or None for no row.  A transaction whose COMMIT got no
answer (the database was killed under it) may or may not have committed: its ids are
uncertain, each with the outcomes it allows (the row before, the row it wrote), until
the id's next acknowledged write makes it exact again.  A transaction that failed
before its COMMIT was sent did not commit: the model stays as it was.

The checker (:func:`acknowledged_lost`) maps the model's rows as the product maps the
source and compares them with the target's rows: an exact id must equal its mapped row
(None: no row), an uncertain one one of its outcomes.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from replicator.mapping.columns import SOURCE_COLUMNS, TARGET_COLUMNS
from replicator.mapping.rows import map_to_tuple

#: What the model keeps of a row: the source row, in ``SOURCE_COLUMNS`` order.
Kept = tuple[Any, ...]


class Application:
    """Writers of their own ids; ``model`` holds every acknowledged write's result."""

    def __init__(self, dsn: str, seed: int, threads: int = 4, ids: int = 40) -> None:
        self.dsn = dsn
        self.seed = seed
        self.ids = ids
        self.model: dict[str, Kept | None] = {}
        #: id -> the outcomes its unanswered COMMITs allow (the model's row first)
        self.uncertain: dict[str, list[Kept | None]] = {}
        self.once_uncertain: set[str] = set()  # every id that had an unanswered COMMIT
        self.commits = 0
        self.errors: dict[str, int] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._writer, args=(t,), daemon=True) for t in range(threads)
        ]

    def start(self) -> Application:
        for t in self.threads:
            t.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _writer(self, t: int) -> None:
        rng = random.Random(self.seed * 1000 + t)
        mine: dict[str, Kept | None] = {}
        unsure: set[str] = set()  # this writer's ids whose last COMMIT got no answer
        conn: psycopg.Connection[Any] | None = None
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, connect_timeout=3, autocommit=True)
                    for rid in sorted(unsure):  # learn what the database kept
                        mine[rid] = self._after(conn, rid)
                    unsure.clear()
                ops = [self._op(rng, t, mine) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
                ops = list({rid: op for rid, *op in ops}.items())  # one op per id
                ops = [(rid, statement, params) for rid, (statement, params) in ops]
                touched = {rid for rid, _, _ in ops}
                results: dict[str, Kept | None] = {}
                committing = False
                try:
                    with conn.transaction():
                        for rid, statement, params in ops:
                            conn.execute(statement, params)
                            results[rid] = self._after(conn, rid)
                        committing = True  # the COMMIT is sent as the block ends
                except psycopg.Error:
                    unsure |= touched  # read again on the next connection
                    if committing:  # the COMMIT may or may not have landed
                        self.unanswered(results)
                    raise
                mine.update(results)
                self.acknowledged(results)
            except psycopg.Error as exc:
                name = type(exc).__name__
                with self.lock:
                    self.errors[name] = self.errors.get(name, 0) + 1
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                self.stop.wait(0.5)
            self.stop.wait(rng.uniform(0.002, 0.02))
        if conn is not None:
            conn.close()

    def acknowledged(self, results: dict[str, Kept | None]) -> None:
        """A committed transaction's rows: the model's, exact again for an uncertain id."""
        with self.lock:
            self.model.update(results)
            for rid in results:
                self.uncertain.pop(rid, None)
            self.commits += 1

    def unanswered(self, results: dict[str, Kept | None]) -> None:
        """A COMMIT without an answer: each id holds its row before, or the one written."""
        with self.lock:
            for rid, after in results.items():
                outcomes = self.uncertain.setdefault(rid, [self.model.get(rid)])
                if after not in outcomes:
                    outcomes.append(after)
                self.once_uncertain.add(rid)

    def _op(self, rng: random.Random, t: int, mine: dict[str, Kept | None]) -> tuple[str, str, Any]:
        rid = f"cx-{t}-{rng.randrange(self.ids)}"
        present = mine.get(rid) is not None
        if not present:  # insert, or insert again after a delete
            big = rng.random() < 0.2
            message = (
                "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(9000))
                if big
                else f"task {rid} {rng.randrange(10**6)}"
            )
            status = rng.choice(("pending", "running", None))
            turns = rng.choice((10, 30, None))
            return (
                rid,
                "INSERT INTO workflow_processes (id, workflow_name, message, status, max_turns,"
                " total_cost, session_name) VALUES (%s, 'chaos', %s, %s, %s, %s, NULL)",
                (rid, message, status, turns, rng.choice((None, 1.25, 99.5))),
            )
        kind = rng.random()
        if kind < 0.3:
            return (
                rid,
                "UPDATE workflow_processes SET status = %s WHERE id = %s",  # TOAST untouched
                (rng.choice(("running", "completed", "failed", None)), rid),
            )
        if kind < 0.6:
            return (
                rid,
                "UPDATE workflow_processes SET max_turns = coalesce(max_turns, 0) + 1"
                " WHERE id = %s",
                (rid,),
            )
        if kind < 0.85:
            return (
                rid,
                "UPDATE workflow_processes SET message = %s, total_cost = %s WHERE id = %s",
                (f"set {rng.randrange(10**6)}", rng.choice((None, 0.5, 3.75)), rid),
            )
        return (rid, "DELETE FROM workflow_processes WHERE id = %s", (rid,))

    @staticmethod
    def _after(conn: psycopg.Connection[Any], rid: str) -> Kept | None:
        """The row as this transaction leaves it (what the model expects once committed)."""
        row = conn.execute(
            f"SELECT {', '.join(SOURCE_COLUMNS)} FROM workflow_processes WHERE id = %s", [rid]
        ).fetchone()
        return None if row is None else tuple(row)


# ------------------------------------------------------------------------- the checker

Mapped = tuple[Any, ...]


def mapped(row: Kept | None) -> Mapped | None:
    """A model's row as the target must hold it (None: no row)."""
    return None if row is None else map_to_tuple(dict(zip(SOURCE_COLUMNS, row, strict=True)))[0]


def acknowledged_lost(
    app: Application, target: dict[str, Mapped], source: dict[str, Mapped]
) -> list[str]:
    """Every id whose target row is not what its acknowledged writes left, and why.

    ``target``: the target's rows by run_id; ``source``: the mapped source rows, to say
    whether the source holds the write (the replicator lost it) or not (the source did).
    An uncertain id may hold any of its outcomes; an exact id only its model's row."""
    lost = []
    for rid in sorted(set(app.model) | set(app.uncertain)):
        have = target.get(rid)
        if rid in app.uncertain:
            outcomes = [mapped(row) for row in app.uncertain[rid]]
            if have not in outcomes:
                lost.append(
                    f"{rid}: a COMMIT without an answer, and the target's row is none of the"
                    f" {len(outcomes)} outcomes it allows; against the last acknowledged write:"
                    f" {difference(outcomes[0], have)}"
                )
            continue
        want = mapped(app.model[rid])
        if have != want:
            held = "the source holds the write" if source.get(rid) == want else "the source too"
            lost.append(f"{rid}: {difference(want, have)} ({held})")
    return lost


def difference(want: Mapped | None, have: Mapped | None) -> str:
    if want is None:
        return "in the target, but the acknowledged write left no row"
    if have is None:
        return "missing from the target, but the acknowledged write left a row"
    return ", ".join(
        f"the target's {name} {_short(h)} where the write left {_short(w)}"
        for name, w, h in zip(TARGET_COLUMNS, want, have, strict=True)
        if w != h
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({len(str(value))} chars)"


# ------------------------------------------------------------------------- processes


class Member:
    """One ``replicator run`` process of the group, logging to its own file."""

    def __init__(self, env: dict[str, str], home: Path, name: str, port: int) -> None:
        self.env, self.name, self.port = env, name, port
        self.log = home / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        out = self.log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--log-format", "human",
             "--metrics-port", str(self.port)],
            env=self.env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


# ------------------------------------------------------------------------- versions

_LOG = "chaos_version_steps"
_FUNCTION = "chaos_version_step"
#: name -> when: every change to an entry of the versions table that is a step back
_TRIGGERS = {
    "chaos_version_back": "AFTER UPDATE ON {v} FOR EACH ROW"
    " WHEN ((NEW.generation, NEW.source_lsn) < (OLD.generation, OLD.source_lsn))",
    "chaos_version_forgotten": "AFTER DELETE ON {v} FOR EACH ROW",
    "chaos_versions_emptied": "AFTER TRUNCATE ON {v} FOR EACH STATEMENT",
}


@dataclass
class VersionWatcher:
    """Triggers on the order guard's table recording every step back of a version as it
    happens, however briefly it lasts, with the statement and the session that did it.

    What a step back is.  A version compares as the order guard compares it,
    ``(generation, source_lsn)`` (replicator/stream/apply/versions.py), and every writer
    that module documents only raises an entry's version or leaves it: a claim (the
    stream, a replay, a redrive, the backfill, ``verify --repair``) writes an entry only
    with a version at least the stored one; a source TRUNCATE and a re-snapshot's sweep
    mark only entries older than their own version (the sweep's ``(N, 0)`` is above every
    entry of an older generation, whatever its LSN); the cutover's repair and the
    rollback's restore (``as_of_now``) record the newest generation and the WAL insert
    position, newer than every change committed before the source was locked.  So an
    UPDATE that lowers ``(generation, source_lsn)`` is a step back whoever runs it; one
    that only flips ``deleted`` at the same version (a change applied again) is not.

    An entry is never removed from the live table (a delete keeps its entry, so an older
    image cannot bring the row back): a DELETE or a TRUNCATE of entries forgets versions,
    after which any older change applies, and is recorded as well.  The replay's
    ``empty()`` forgets every version of the replay's own table, another table, not
    watched here.  A table swap (``replay --swap``) renames tables: the triggers stay on
    the table they were created on, so the live name would then hold a table they do
    not watch; :meth:`watching` says so, and the checker cannot pass without it.

    Installed by the campaign, as the tables' owner, in the stack it started; the
    function runs as its owner (SECURITY DEFINER), so the replicator's role needs no
    grant on the log table.
    """

    dsn: str
    table: str = "workflow_runs_versions"

    def install(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.oid = to_regclass(%s)",
                [self.table],
            ).fetchone()
            if row is None:
                raise RuntimeError(f"{self.table} is missing: nothing to watch")
            log, v = sql.Identifier(row[0], _LOG), sql.Identifier(row[0], self.table)
            function = sql.Identifier(row[0], _FUNCTION)
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {log} (at timestamptz NOT NULL, op text NOT NULL,"
                    " run_id text, old_generation integer, old_lsn bigint,"
                    " new_generation integer, new_lsn bigint, who text, statement text)"
                ).format(log=log)
            )
            conn.execute(_function_sql(function, log))
            for name, when in _TRIGGERS.items():
                conn.execute(
                    sql.SQL(
                        "CREATE OR REPLACE TRIGGER {name} " + when + " EXECUTE FUNCTION {f}()"
                    ).format(name=sql.Identifier(name), v=v, f=function)
                )

    def watching(self) -> bool:
        """The triggers are on the table of that name, enabled."""
        with psycopg.connect(self.dsn, connect_timeout=5) as conn:
            (n,) = conn.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%s)"
                " AND tgname = ANY(%s) AND tgenabled <> 'D'",
                [self.table, list(_TRIGGERS)],
            ).fetchone() or (0,)
        return int(n) == len(_TRIGGERS)

    def steps_back(self, since: float) -> list[str]:
        """Every step back recorded, in order, ``since``: the run's start (epoch seconds)."""
        with psycopg.connect(self.dsn, connect_timeout=5) as conn:
            (present,) = conn.execute("SELECT to_regclass(%s)", [_LOG]).fetchone() or (None,)
            if present is None:
                return [f"{_LOG} is missing: the steps back it recorded are lost"]
            rows = conn.execute(
                sql.SQL(
                    "SELECT extract(epoch FROM at)::float8, op, run_id, old_generation, old_lsn,"
                    " new_generation, new_lsn, who, statement FROM {} ORDER BY at"
                ).format(sql.Identifier(_LOG))
            ).fetchall()
        out = []
        for at, op, rid, og, ol, ng, nl, who, statement in rows:
            what = {
                "UPDATE": f"{rid}: ({og}, {ol}) -> ({ng}, {nl})",
                "DELETE": f"{rid}: its version ({og}, {ol}) deleted",
            }.get(op, "every version deleted (TRUNCATE)")
            out.append(f"{what}, {at - since:.1f} s into the run, by {who!r}: {statement}")
        return out


def _function_sql(function: sql.Identifier, log: sql.Identifier) -> sql.Composed:
    """The triggers' function: one row in ``log`` per step back (a TRUNCATE: one per
    statement), with the session's application_name and its statement."""
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
        " SET search_path = pg_catalog, pg_temp AS $body$"
        " DECLARE who text := current_setting('application_name');"
        " what text := left(current_query(), 300);"
        " BEGIN"
        " IF TG_OP = 'TRUNCATE' THEN"
        "  INSERT INTO {log} VALUES (clock_timestamp(), TG_OP, NULL, NULL, NULL, NULL, NULL,"
        "  who, what);"
        " ELSIF TG_OP = 'DELETE' THEN"
        "  INSERT INTO {log} VALUES (clock_timestamp(), TG_OP, OLD.run_id, OLD.generation,"
        "  OLD.source_lsn, NULL, NULL, who, what);"
        " ELSE"
        "  INSERT INTO {log} VALUES (clock_timestamp(), TG_OP, OLD.run_id, OLD.generation,"
        "  OLD.source_lsn, NEW.generation, NEW.source_lsn, who, what);"
        " END IF;"
        " RETURN NULL;"
        " END $body$"
    ).format(f=function, log=log)
