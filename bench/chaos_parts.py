"""The parts of the fault campaign (bench/chaos.py): the application and its model, the
replicator processes, the faults and the version sampler.

The application: ``threads`` connections writing ``workflow_processes`` as its owner,
each on ids of its own (``cx-<thread>-<n>``), so that the model of every acknowledged
write is exact: inserts (some with a large TOASTed ``message``, some with NULLs),
absolute updates, increments, updates of a TOASTed row that do not touch the large
column, deletes, re-inserts of a deleted id, and transactions of several of these.  A
transaction whose COMMIT got no answer (the database was killed under it) may or may not
have committed: its ids are marked uncertain, and the checker takes the source's word
for them (either outcome is legal; what matters is that the target agrees).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

#: What the model keeps of a row: the columns the application writes after the insert.
Kept = tuple[str, str | None, int | None]


class Application:
    """Writers of their own ids; ``model`` holds every acknowledged write's result."""

    def __init__(self, dsn: str, seed: int, threads: int = 4, ids: int = 40) -> None:
        self.dsn = dsn
        self.seed = seed
        self.ids = ids
        self.model: dict[str, Kept | None] = {}
        self.uncertain: set[str] = set()
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
                try:
                    with conn.transaction():
                        results = {}
                        for rid, statement, params in ops:
                            conn.execute(statement, params)
                            results[rid] = self._after(conn, rid)
                except psycopg.OperationalError:  # the COMMIT may or may not have landed
                    unsure |= touched
                    with self.lock:
                        self.uncertain |= touched
                    raise
                mine.update(results)
                with self.lock:
                    self.model.update(results)
                    self.commits += 1
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
            "SELECT md5(message), status, max_turns FROM workflow_processes WHERE id = %s", [rid]
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])


def source_kept(dsn: str) -> dict[str, Kept]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id, md5(message), status, max_turns FROM workflow_processes"
            " WHERE id LIKE 'cx-%'"
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


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


@dataclass
class VersionSampler:
    """Samples ``workflow_runs_versions`` of the application's ids while the campaign runs:
    a key's (generation, LSN) must never go back."""

    dsn: str
    last: dict[str, tuple[int, int]] = field(default_factory=dict)
    backwards: list[str] = field(default_factory=list)
    samples: int = 0

    def sample(self) -> None:
        with psycopg.connect(self.dsn, connect_timeout=3) as conn:
            rows = conn.execute(
                "SELECT run_id, generation, source_lsn FROM workflow_runs_versions"
                " WHERE run_id LIKE 'cx-%'"
            ).fetchall()
        self.samples += 1
        for rid, generation, lsn in rows:
            now = (int(generation), int(lsn))
            before = self.last.get(rid)
            if before is not None and now < before:
                self.backwards.append(f"{rid}: {before} -> {now}")
            self.last[rid] = now
