"""How long the cutover blocks writers, by table size, under a writing application.

For each size: a local stack of its own (``replicator stack up`` in a temporary state
folder), that many legacy rows, ``replicator run`` until it caught up, then an
application writing the whole time (several connections updating random rows and
inserting new ones, each write timed) while ``replicator cutover`` runs.  Reported per
size: the switch's own figure (``writers ... waited at most N ms``: from the lock of
``workflow_processes`` to the commit), the slowest application write seen during the
cutover command, and how long the whole command took (its comparisons of the whole
tables run before the lock).

``--load backfill`` builds the table as a large one is built in production, not through
the broker: the connector is removed (and its slot), the rows are written, the connector
comes back with ``snapshot.mode=no_data`` and ``replicator backfill`` copies them into
``workflow_runs``; the cutover's own progress lines (step 0's comparison) are printed as
they come.  20 M rows take about 15 GB of disk and hours on a small machine:

      .venv/bin/python bench/cutover.py --load backfill --sizes 20000000

Run:  .venv/bin/python bench/cutover.py [--sizes 20000,300000,1000000] [--writers 4]
Writes bench/results/<time>-cutover.{json,md}; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replicator.local.processes import free_port  # noqa: E402
from replicator.local.sample import insert_rows  # noqa: E402
from replicator.local.stack import LocalStack  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def log(line: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {line}", flush=True)


class Application(threading.Thread):
    """One connection writing ``workflow_processes`` as its owner: updates of random rows
    and inserts of new ones, as fast as they go, each write timed."""

    def __init__(self, dsn: str, rows: int, n: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rows, self.n = dsn, rows, n
        self.stop = threading.Event()
        self.latencies: list[tuple[float, float]] = []  # (started, seconds)
        self.errors: list[str] = []

    def run(self) -> None:
        rng = random.Random(self.n)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            k = 0
            while not self.stop.is_set():
                k += 1
                started = time.monotonic()
                try:
                    if k % 4 == 0:
                        conn.execute(
                            "INSERT INTO workflow_processes (id, workflow_name, message)"
                            " VALUES (%s, 'bench', 'm')",
                            [f"app-{self.n}-{k}"],
                        )
                    else:
                        conn.execute(
                            "UPDATE workflow_processes SET max_turns = max_turns + 1 WHERE id = %s",
                            [f"wp-{rng.randrange(self.rows):08d}"],
                        )
                except psycopg.Error as exc:
                    self.errors.append(f"{exc.sqlstate}: {str(exc).strip()[:120]}")
                self.latencies.append((started, time.monotonic() - started))
                time.sleep(0.002)


def cli(env: dict[str, str], *argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def caught_up(env: dict[str, str], rows: int, timeout: float = 1800) -> float:
    """Wait until workflow_runs holds the ``rows`` sample rows; the seconds it took."""
    started = time.monotonic()
    with psycopg.connect(env["REPLICATOR_ADMIN_TARGET_DSN"], autocommit=True) as conn:
        while time.monotonic() - started < timeout:
            (n,) = conn.execute(
                "SELECT count(*) FROM workflow_runs WHERE run_id LIKE 'wp-%'"
            ).fetchone()  # type: ignore[misc]
            if n >= rows:
                return time.monotonic() - started
            time.sleep(2)
    raise TimeoutError(f"workflow_runs did not reach {rows} rows in {timeout:g} s")


def streamed(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """``replicator <argv>``, its output printed as it comes (progress) and kept."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "replicator", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        log(f"  {argv[0]}: {line.rstrip()}")
    return subprocess.CompletedProcess(proc.args, proc.wait(), "".join(lines), "")


def backfilled(env: dict[str, str], owner: str, rows: int) -> None:
    """``rows`` legacy rows in ``workflow_runs`` by ``replicator backfill``, none of them
    through the broker (module docstring)."""
    slot = env.get("REPLICATOR_SLOT_NAME", "replicator_workflow_processes")
    if cli(env, "connector", "delete").returncode != 0:
        raise RuntimeError("connector delete failed")
    with psycopg.connect(owner, autocommit=True) as conn:
        for _ in range(60):
            gone = conn.execute(
                "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active",
                [slot],
            ).fetchone()
            if (
                gone == (1,)
                or not conn.execute(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", [slot]
                ).fetchone()
            ):
                break
            time.sleep(1)
    step = 1_000_000
    for start in range(0, rows, step):
        insert_rows(owner, min(step, rows - start), start=start)
        log(f"{rows:,} rows: {min(start + step, rows):,} written")
    done = cli(env, "connector", "apply", "--snapshot-mode", "no_data")
    if done.returncode != 0:
        raise RuntimeError(f"connector apply failed:\n{done.stdout}\n{done.stderr}")
    done = streamed(env, "backfill")
    if done.returncode != 0:
        raise RuntimeError("backfill failed")


def one_size(rows: int, writers: int, load: str = "stream") -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="bench-cutover-"))
    stack = LocalStack(state / "stack")
    settings = stack.up()
    env = {**os.environ, **settings, "REPLICATOR_ENV_FILE": str(stack.env_file)}
    owner = settings["REPLICATOR_ADMIN_SOURCE_DSN"]
    run: subprocess.Popen[bytes] | None = None
    try:
        log(f"{rows:,} rows: loading ({load})")
        if load == "backfill":
            backfilled(env, owner, rows)
        else:
            insert_rows(owner, rows)
        run = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--metrics-port", str(free_port())],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(state / "run.log").open("w"),
        )
        load_s = caught_up(env, rows)
        log(f"{rows:,} rows: replicated in {load_s:.0f} s; cutover under {writers} writers")
        app = [Application(owner, rows, n) for n in range(writers)]
        for thread in app:
            thread.start()
        time.sleep(3)
        began = time.monotonic()
        done = streamed(env, "cutover")
        ended = time.monotonic()
        time.sleep(2)
        for thread in app:
            thread.stop.set()
        for thread in app:
            thread.join(30)
        if done.returncode != 0:
            raise RuntimeError(f"cutover failed:\n{done.stdout}\n{done.stderr}")
        blocked = re.search(r"waited at most (\d+) ms", done.stdout)
        during = [s for a in app for at, s in a.latencies if began <= at <= ended]
        writes = sum(len(a.latencies) for a in app)
        errors = [e for a in app for e in a.errors]
        return {
            "rows": rows,
            "blocked_ms": int(blocked.group(1)) if blocked else None,
            "slowest_write_ms": round(max(during, default=0.0) * 1000, 1),
            "command_s": round(ended - began, 2),
            "replicated_s": round(load_s, 1),
            "writes": writes,
            "failed_writes": len(errors),
            "errors": errors[:5],
            "output": done.stdout,
        }
    finally:
        if run is not None and run.poll() is None:
            run.send_signal(signal.SIGTERM)
            run.wait(60)
        stack.destroy()


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Cutover: time writers are blocked, by table size ({report['started']})",
        "",
        f"{report['writers']} application connections writing throughout (updates of random"
        f" rows, inserts), on this machine's local stack; rows loaded by {report['load']}.",
        "",
        "| rows | blocked (switch) ms | slowest app write during the command ms |"
        " whole command s | app writes | failed |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["sizes"]:
        lines.append(
            f"| {r['rows']:,} | {r['blocked_ms']} | {r['slowest_write_ms']} | {r['command_s']}"
            f" | {r['writes']:,} | {r['failed_writes']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,300000,1000000")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument(
        "--load",
        choices=("stream", "backfill"),
        default="stream",
        help="how workflow_runs gets the rows: the connector's snapshot through the broker,"
        " or `replicator backfill` (large tables)",
    )
    args = parser.parse_args()
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "started": f"{started:%Y-%m-%dT%H:%M:%SZ}",
        "writers": args.writers,
        "load": args.load,
        "sizes": [one_size(int(n), args.writers, args.load) for n in args.sizes.split(",")],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{started:%Y-%m-%dT%H%M%S}-cutover"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
