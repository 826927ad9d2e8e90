"""A randomized fault campaign: every part of the stack killed, paused or restarted in
any order, while an application writes, then a checker that knows what must be true.

    python bench/chaos.py --minutes 30 --seed 1 --out bench/results
    python bench/chaos.py --minutes 2 --seed 7            # what the test suite runs

A stack of its own (``replicator/local``), 300 sample rows, one ``replicator run``
member (a second one joins and leaves as a fault), the application of
bench/chaos_parts.py.  The nemesis draws a fault every ``--every`` seconds (weighted,
from the seed), each healing on its own thread after a random delay, so a fault may hit
while another is still healing.  Stack operations (``stack up`` and the connector's
commands) are serialized; everything else is not.

At the end the writers stop, the faults stop, everything is healed (the stack up, the
connector running, the member running), and the system has ``--converge`` seconds to
converge.  Then: ``workflow_runs`` equals the mapped source exactly; every id's row in
``workflow_runs`` is what its acknowledged writes left, mapped (an id whose last COMMIT
got no answer: one of the outcomes that allows; the id's next acknowledged write makes
it exact again); no entry of ``workflow_runs_versions`` ever went back (triggers record
every step back as it happens, chaos_parts.VersionWatcher); no event was dead-lettered
(the application writes nothing a mapping refuses); ``replicator verify`` exits 0.  A
failure prints the seed, the fault sequence and, per check, what it found; the same
seed draws the same sequence.

Figures: faults by kind, time to converge after each (the end-to-end lag of a probe row
written every second falls below 5 s), the largest lag, and a chart of the lag over time
with the faults marked (JSON, Markdown and PNG under ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from chaos_parts import Application, Member, VersionWatcher, acknowledged_lost  # noqa: E402

from replicator.local.processes import free_port  # noqa: E402
from replicator.local.sample import insert_rows  # noqa: E402
from replicator.local.stack import LocalStack  # noqa: E402
from replicator.mapping.columns import JSON_COLUMNS, SOURCE_COLUMNS, TARGET_COLUMNS  # noqa: E402
from replicator.mapping.rows import map_to_tuple  # noqa: E402

SESSION_TIMEOUT_MS = 6000
#: kind -> weight: how often the nemesis draws it
WEIGHTS = {
    "kill_replicator": 3,
    "pause_replicator": 2,
    "second_member": 2,
    "kill_connect": 2,
    "kill_postgres": 1,
    "terminate_sink": 2,
    "broker_restart_empty": 1,
    "connector_restart": 2,
    "resnapshot": 1,
}


class Campaign:
    def __init__(self, home: Path, seed: int, say: Callable[[str], None]) -> None:
        self.home, self.seed, self.say = home, seed, say
        self.rng = random.Random(seed)
        self.stack = LocalStack(home / "state", log=lambda line: None)
        self.stack_lock = threading.Lock()
        self.faults: list[dict[str, Any]] = []
        self.heals: list[threading.Thread] = []
        self.lag: list[tuple[float, float]] = []  # (seconds since start, end-to-end lag)
        self.product_errors: list[str] = []
        self.regrouped: str | None = None  # what the product said, when it led to a new group
        self.started = time.monotonic()
        self.started_wall = time.time()  # the watcher's records are in wall-clock time

    # ---- set-up ------------------------------------------------------------------

    def up(self) -> None:
        settings = self.stack.up()
        self.settings = settings
        self.source = settings["REPLICATOR_ADMIN_SOURCE_DSN"]
        self.target = settings["REPLICATOR_ADMIN_TARGET_DSN"]
        insert_rows(self.source, 300, seed=self.seed)
        self.watcher = VersionWatcher(self.target)
        self.watcher.install()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")},
            **settings,
            "REPLICATOR_ENV_FILE": os.devnull,
            "REPLICATOR_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "REPLICATOR_GROUP_ID": "chaos",
        }
        self.main = Member(self.env, self.home, "member-1", free_port())
        self.second = Member(self.env, self.home, "member-2", free_port())
        self.main.start()

    def cli(self, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "replicator", *argv],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def now(self) -> float:
        return round(time.monotonic() - self.started, 2)

    # ---- the faults ----------------------------------------------------------------

    def later(
        self, delay: float, what: str, heal: Callable[[], None], fault: dict[str, Any]
    ) -> None:
        def run() -> None:
            time.sleep(delay)
            try:
                heal()
            except Exception as exc:  # a heal that fails is reported, the campaign goes on
                fault["heal_error"] = f"{type(exc).__name__}: {exc}"[:300]
            fault["healed_at"] = self.now()

        fault["heal"] = f"{what} after {delay:.1f} s"
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.heals.append(thread)

    def stack_up(self) -> None:
        with self.stack_lock:
            self.stack.up()

    def connector_running(self) -> None:
        """What the README tells an operator: the connector RUNNING again, registered anew
        if it is gone (a broker restarted empty forgets it)."""
        with self.stack_lock:
            status = self.cli("connector", "status")
            if not connector_runs(status.stdout):
                again = self.cli(
                    "connector", "restart" if "not registered" not in status.stderr else "apply"
                )
                if again.returncode != 0:
                    self.cli("connector", "apply")

    def finish_resnapshot(self) -> str | None:
        """What the product tells the operator when a ``--resnapshot`` was interrupted
        (``connector status``: the newest snapshot generation never completed): run it
        again.  Done here as the operator would; what the product said, or None."""
        with self.stack_lock:
            said = self.cli("connector", "status").stdout
        told = next((line for line in said.splitlines() if "has not completed" in line), None)
        if told is not None:
            again = self.cli("connector", "apply", "--resnapshot", "--timeout", "300", timeout=1200)
            self.say(
                f"the product said: {told}\n  connector apply --resnapshot: exit {again.returncode}"
            )
        return told

    def fault(self, kind: str) -> dict[str, Any]:
        rng = self.rng
        fault: dict[str, Any] = {"at": self.now(), "kind": kind}
        if kind == "kill_replicator":
            self.main.signal(signal.SIGKILL)
            self.later(rng.uniform(1, 5), "restarted", self._restart_main, fault)
        elif kind == "pause_replicator":
            self.main.signal(signal.SIGSTOP)
            pause = SESSION_TIMEOUT_MS / 1000 + rng.uniform(1, 4)
            self.later(pause, "SIGCONT", lambda: self.main.signal(signal.SIGCONT), fault)
        elif kind == "second_member":
            if not self.second.alive():
                self.second.start()
            self.later(rng.uniform(5, 15), "left the group", self.second.stop, fault)
        elif kind == "kill_connect":
            self._kill(self.stack.state.connect.pid)
            self.later(rng.uniform(1, 4), "stack up", self.stack_up, fault)
        elif kind == "kill_postgres":
            self._kill(self.stack.pg.postmaster_pid())
            self.later(rng.uniform(1, 3), "stack up, connector running", self._pg_back, fault)
        elif kind == "terminate_sink":
            with psycopg.connect(self.source, autocommit=True, connect_timeout=3) as conn:
                (n,) = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE usename = 'replicator_app'"
                ).fetchone() or (0,)
            fault["detail"] = f"{n} sessions"
        elif kind == "broker_restart_empty":  # Connect keeps its state in the broker: both
            self._kill(self.stack.state.broker.pid)
            self._kill(self.stack.state.connect.pid)
            self.later(rng.uniform(1, 4), "stack up (topics empty)", self._broker_back, fault)
        elif kind == "connector_restart":
            with self.stack_lock:
                res = self.cli("connector", "restart")
            fault["detail"] = f"exit {res.returncode}"
        elif kind == "resnapshot":
            self.later(0.0, "connector apply --resnapshot", lambda: self._resnapshot(fault), fault)
        return fault

    def _kill(self, pid: int | None) -> None:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _restart_main(self) -> None:
        if not self.main.alive():
            self.main.start()

    def _pg_back(self) -> None:
        self.stack_up()
        time.sleep(3)
        self.connector_running()

    def _broker_back(self) -> None:
        self.stack_up()  # the broker, Connect, the connector registered again
        self.connector_running()

    def _resnapshot(self, fault: dict[str, Any]) -> None:
        with self.stack_lock:
            res = self.cli("connector", "apply", "--resnapshot", "--timeout", "120", timeout=600)
        fault["detail"] = f"exit {res.returncode}"
        if res.returncode != 0:  # said by the product, not silent: kept for the report
            fault["product_error"] = (res.stderr.strip().splitlines() or ["?"])[-1][:300]
            self.connector_running()

    # ---- the probe -------------------------------------------------------------------

    def probe(self, stop: threading.Event) -> None:
        """Every second: write the time into a row of its own and read it back from the
        target (the end-to-end lag)."""
        while not stop.is_set():
            stamp = time.monotonic() - self.started
            try:
                with psycopg.connect(self.source, autocommit=True, connect_timeout=2) as conn:
                    conn.execute(
                        "INSERT INTO workflow_processes (id, workflow_name, message)"
                        " VALUES ('cx-probe', 'probe', %s) ON CONFLICT (id)"
                        " DO UPDATE SET message = EXCLUDED.message",
                        [f"{stamp:.3f}"],
                    )
                with psycopg.connect(self.target, connect_timeout=2) as conn:
                    row = conn.execute(
                        "SELECT description FROM workflow_runs WHERE run_id = 'cx-probe'"
                    ).fetchone()
                if row is not None:
                    self.lag.append((round(stamp, 2), round(stamp - float(row[0]), 2)))
            except (psycopg.Error, ValueError):
                pass  # a database down: the lag grows, the next sample says by how much
            stop.wait(1.0)

    # ---- the run ---------------------------------------------------------------------

    def run(self, minutes: float, every: float, converge_s: float) -> dict[str, Any]:
        app = Application(self.source, self.seed).start()
        stop_probe = threading.Event()
        probe = threading.Thread(target=self.probe, args=(stop_probe,), daemon=True)
        probe.start()
        kinds, weights = zip(*WEIGHTS.items(), strict=True)
        deadline = time.monotonic() + minutes * 60
        time.sleep(min(10.0, every))
        while time.monotonic() < deadline:
            kind = self.rng.choices(kinds, weights)[0]
            try:
                fault = self.fault(kind)
            except Exception as exc:  # e.g. the database is down: the fault could not act
                fault = {"at": self.now(), "kind": kind, "detail": f"not done: {exc}"[:200]}
            self.faults.append(fault)
            self.say(f"{fault['at']:8.1f}s  {kind} {fault.get('detail', '')}".rstrip())
            time.sleep(self.rng.uniform(0.5, 1.5) * every)
        app.finish()
        self.say(f"writers stopped: {app.commits} commits, errors {app.errors}")
        for thread in self.heals:
            thread.join(600)
        healed_at = self.now()
        self.stack_up()
        self.connector_running()
        self.second.stop()
        if not self.main.alive():
            self.main.start()
        told = self.finish_resnapshot()
        log_mark = self.main.log.stat().st_size if self.main.log.exists() else 0
        asked_again = time.monotonic() + 30

        def meanwhile() -> None:
            nonlocal told, asked_again
            self.regroup(log_mark)
            # a member that finds its topic re-created only now records the generation
            # that connector status then reports: asked once more, 30 s in
            if told is None and time.monotonic() > asked_again:
                asked_again = float("inf")
                told = self.finish_resnapshot()

        converged_at = self.converge(converge_s, meanwhile)
        stop_probe.set()
        probe.join(10)
        result = self.check(app, healed_at, converged_at)
        result["operator_told"] = told
        result["regrouped"] = self.regrouped
        return result

    def converge(self, timeout: float, meanwhile: Callable[[], None]) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if mapped_source(self.source) == target_rows(self.target):
                    return self.now()
            except psycopg.Error:
                pass
            meanwhile()
            time.sleep(2)
        return None

    def regroup(self, log_mark: int) -> None:
        """What the product tells the operator when the group's rebalance never completes
        (the broker's coordinator lost track of the group; the local stack's broker does
        when the group's leader leaves while the group forms): give the members another
        group id.  Done here once, as the operator would, and only when the product said
        it after the last heal; what it said is kept for the report."""
        if self.regrouped is not None or not self.main.log.exists():
            return
        with self.main.log.open("rb") as f:
            f.seek(log_mark)
            said = f.read().decode(errors="replace")
        told = next(
            (
                line.strip()
                for line in said.splitlines()
                if "no partition assigned" in line and "rebalance has not completed" in line
            ),
            None,
        )
        if told is None:
            return
        self.regrouped = told[:400]
        self.main.stop()
        self.env = {**self.env, "REPLICATOR_GROUP_ID": "chaos-regrouped"}
        self.main.env = self.env
        self.main.start()
        self.say(f"the product said: {told[:300]}\n  restarted with another group id")

    def check(
        self, app: Application, healed_at: float, converged_at: float | None
    ) -> dict[str, Any]:
        expected, actual = mapped_source(self.source), target_rows(self.target)
        missing = sorted(set(expected) - set(actual))
        extra = sorted(set(actual) - set(expected))
        wrong = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
        lost = acknowledged_lost(app, actual, expected)
        backwards = self.watcher.steps_back(self.started_wall)
        if not self.watcher.watching():
            backwards.append(
                f"the triggers are no longer on {self.watcher.table}: a step back there"
                " could not be seen"
            )
        letters = dead_letters([self.main.log, self.second.log])
        verify = self.cli("verify", "--json", "--catch-up-timeout", "60", timeout=600)
        checks = {
            "converged": converged_at is not None and not (missing or extra or wrong),
            "acknowledged writes in place": not lost,
            "versions never went back": not backwards,
            "no dead letters": not letters,
            "verify exits 0": verify.returncode == 0,
        }
        return {
            "seed": self.seed,
            "passed": all(checks.values()),
            "checks": checks,
            "faults": self.faults,
            "faults_by_kind": {k: sum(f["kind"] == k for f in self.faults) for k in WEIGHTS},
            "healed_at_s": healed_at,
            "converged_at_s": converged_at,
            "rows": {"source": len(expected), "target": len(actual)},
            "missing": missing[:20], "extra": extra[:20], "wrong": wrong[:20],
            "lost_writes": lost[:20],
            "uncertain_writes": len(app.uncertain),
            "ids_once_uncertain": len(app.once_uncertain),
            "commits": app.commits,
            "application_errors": app.errors,
            "versions_backwards": backwards[:20],
            "dead_letters": letters[:20],
            "verify": verify.stdout[-2000:] if verify.returncode else "in sync",
            "lag": self.lag,
            "max_lag_s": max((lag for _, lag in self.lag), default=None),
            "recovery_s": recovery(self.faults, self.lag),
            "product_errors": errors_in([self.main.log, self.second.log]),
        }  # fmt: skip


# ---------------------------------------------------------------------------- checks


def mapped_source(dsn: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        rows = conn.execute(f"SELECT {', '.join(SOURCE_COLUMNS)} FROM workflow_processes")
        out = {}
        for row in rows:
            values, _ = map_to_tuple(dict(zip(SOURCE_COLUMNS, row, strict=True)))
            out[values[0]] = values
    return out


def target_rows(dsn: str) -> dict[str, tuple[Any, ...]]:
    cols = ", ".join(f"{c}::text" if c in JSON_COLUMNS else c for c in TARGET_COLUMNS)
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        return {r[0]: tuple(r) for r in conn.execute(f"SELECT {cols} FROM workflow_runs")}


def connector_runs(status: str) -> bool:
    """``connector status``'s JSON says the connector and every task RUNNING."""
    try:
        doc = json.loads(status[: status.rindex("}") + 1])
    except ValueError:
        return False
    tasks = doc.get("tasks") or []
    return (
        (doc.get("connector") or {}).get("state") == "RUNNING"
        and bool(tasks)
        and all(t.get("state") == "RUNNING" for t in tasks)
    )


def dead_letters(logs: list[Path]) -> list[str]:
    return [
        line.strip()[:300]
        for log in logs if log.exists()
        for line in log.read_text(errors="replace").splitlines()
        if "event dead-lettered" in line
    ]  # fmt: skip


def errors_in(logs: list[Path]) -> list[str]:
    """The product's own ERROR lines (what it said when something could not go on)."""
    return [
        line.strip()[:300]
        for log in logs if log.exists()
        for line in log.read_text(errors="replace").splitlines()
        if " ERROR " in line or "CRITICAL" in line
    ][-20:]  # fmt: skip


def recovery(faults: list[dict[str, Any]], lag: list[tuple[float, float]]) -> list[float | None]:
    """Per fault: seconds from its heal (or itself) until the probe's lag is below 5 s."""
    out: list[float | None] = []
    for f in faults:
        since = f.get("healed_at", f["at"])
        back = next((t for t, value in lag if t >= since and value < 5.0), None)
        out.append(None if back is None else round(back - since, 1))
    return out


# ---------------------------------------------------------------------------- report


def markdown(r: dict[str, Any], minutes: float) -> str:
    rec = [x for x in r["recovery_s"] if x is not None]
    lines = [
        f"# Fault campaign, seed {r['seed']}, {minutes:g} minutes: "
        + ("PASSED" if r["passed"] else "FAILED"),
        "",
        "| check | result |", "| --- | --- |",
        *(f"| {k} | {'ok' if v else 'FAILED'} |" for k, v in r["checks"].items()),
        "",
        f"{len(r['faults'])} faults; the application committed {r['commits']:,} transactions"
        f" ({r['ids_once_uncertain']} ids had a COMMIT without an answer,"
        f" {r['uncertain_writes']} still uncertain at the end, each held to its outcomes; errors"
        f" it rode out: {r['application_errors']}); rows at the end: {r['rows']['source']:,}"
        f" source, {r['rows']['target']:,} target; largest end-to-end lag {r['max_lag_s']} s;"
        f" converged {r['converged_at_s']} s into the run (healed at {r['healed_at_s']} s).",
        "",
        "| fault | count | time to converge after it (median, max) |", "| --- | ---: | --- |",
    ]  # fmt: skip
    for kind, count in r["faults_by_kind"].items():
        times = sorted(
            x for f, x in zip(r["faults"], r["recovery_s"], strict=True)
            if f["kind"] == kind and x is not None
        )  # fmt: skip
        mid = f"{times[len(times) // 2]} s, {times[-1]} s" if times else "-"
        lines.append(f"| {kind} | {count} | {mid} |")
    if rec:
        lines += ["", f"Every fault: median {sorted(rec)[len(rec) // 2]} s, max {max(rec)} s."]
    if r.get("operator_told"):
        lines += [
            "",
            "After the last heal the product reported what only the operator can finish, and"
            f" the campaign did it (`connector apply --resnapshot`): {r['operator_told']}",
        ]
    if r.get("regrouped"):
        lines += [
            "",
            "After the last heal the member reported a group whose rebalance never completes"
            " (the broker's coordinator lost track of it), and the campaign did what the"
            f" report says (another `REPLICATOR_GROUP_ID`): {r['regrouped']}",
        ]
    return "\n".join(lines) + "\n"


def chart(r: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(12, 4))
    if r["lag"]:
        ax.plot([t for t, _ in r["lag"]], [v for _, v in r["lag"]], lw=0.8, label="end-to-end lag")
    for f in r["faults"]:
        ax.axvline(f["at"], color="red", alpha=0.25, lw=0.6)
    ax.set_xlabel("seconds (red: a fault)")
    ax.set_ylabel("lag, s")
    ax.set_title(f"fault campaign, seed {r['seed']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    p.add_argument("--every", type=float, default=8.0, help="seconds between faults (mean)")
    p.add_argument("--converge", type=float, default=240.0, help="seconds to converge")
    p.add_argument("--out", help="write JSON, Markdown and PNG here")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    print(f"chaos: seed {seed}", flush=True)
    home = Path(tempfile.mkdtemp(prefix="replicator-chaos-"))
    campaign = Campaign(home, seed, lambda line: print(line, flush=True))
    try:
        campaign.up()
        result = campaign.run(args.minutes, args.every, args.converge)
    finally:
        for name in ("main", "second"):  # absent when the stack did not come up
            if hasattr(campaign, name):
                getattr(campaign, name).stop()
        campaign.stack.down()
    print(json.dumps({k: result[k] for k in ("passed", "checks", "faults_by_kind")}, indent=2))
    if not result["passed"]:
        print(f"chaos: FAILED with seed {seed}; faults in order:")
        for f in result["faults"]:
            print(f"  {json.dumps(f)}")
        for key in ("missing", "extra", "wrong", "lost_writes", "versions_backwards",
                    "dead_letters", "verify", "product_errors"):  # fmt: skip
            if result[key]:
                print(f"  {key}: {result[key]}")
        print(f"  logs: {home}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%S")
        base = out / f"{stamp}-chaos"
        base.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        base.with_suffix(".md").write_text(markdown(result, args.minutes))
        chart(result, base.with_suffix(".png"))
        print(f"chaos: results in {base}.*")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
