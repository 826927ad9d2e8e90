"""The plan's load test: ten times the normal change rate, held, while `replicator run` applies.

    python bench/soak.py                          # 500 changes/s normal, 5 000/s for 10 min
    python bench/soak.py --normal 500 --factor 10 --minutes 10
    python bench/soak.py --env-file .replicator/stack/stack.env --minutes 1 --normal 50

An application writes ``workflow_processes`` in ordinary small transactions (each one
statement of ``--tx-changes`` rows, committed: mostly UPDATEs of existing rows, one in
ten an INSERT of new ones) at ``normal x factor`` changes per second, while `replicator
run` (a subprocess, as operators run it) applies the stream.  Every 5 s the bench reads
the replicator's own /metrics and its RSS; per minute it reports the consumer lag (the
largest seen and the last), the end-to-end lag's p50 and p99 (source commit -> row
applied, ``replicator_end_to_end_lag_seconds``, as Prometheus' ``histogram_quantile``
computes them from that minute's bucket counts), the changes written and applied, and
the RSS.  Once the writer stops and the replicator has caught up, `replicator verify`
compares the whole table with the source: nothing lost.

Results go to bench/results/<UTC date-time>-soak.json and .md, and a PNG chart.  Nothing
here asserts on time: the report shows the first and the last minute side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    _cli,
    _hwm_kib,
    _topic_ends,
    bench_stack,
    count,
    fresh_table,
    log,
    machine,
    pyplot,
    write_report,
)
from replicator.local.processes import free_port  # noqa: E402
from replicator.local.sample import insert_rows  # noqa: E402

SAMPLE_S = 5.0


# ---- the application -----------------------------------------------------------------------


class Writer(threading.Thread):
    """Small transactions at ``rate`` changes per second; counts what it committed."""

    def __init__(self, dsn: str, ids: list[str], prefix: str, rate: int, per_tx: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.ids, self.prefix = dsn, ids, prefix
        self.rate, self.per_tx = rate, per_tx
        self.sent = 0
        self.behind_s = 0.0  # how far the writer itself fell behind its schedule, at most
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        new = 0
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:  # each statement commits
                started = time.perf_counter()
                while not self.stop_event.is_set():
                    elapsed = time.perf_counter() - started
                    due = int(elapsed * self.rate)
                    self.behind_s = max(self.behind_s, (due - self.sent) / self.rate)
                    while self.sent < due and not self.stop_event.is_set():
                        if rng.random() < 0.1:
                            fresh = [f"{self.prefix}n{new + i:08d}" for i in range(self.per_tx)]
                            new += self.per_tx
                            conn.execute(
                                "INSERT INTO workflow_processes (id, workflow_name, message,"
                                " status, total_cost, created_at, updated_at)"
                                " SELECT i, 'soak', 'a new run', 'pending', 0.5, now(), now()"
                                " FROM unnest(%s::text[]) AS i",
                                (fresh,),
                            )
                            self.ids.extend(fresh)
                        else:
                            conn.execute(
                                "UPDATE workflow_processes SET status = %s, updated_at = now(),"
                                " total_cost = %s WHERE id = ANY(%s)",
                                (
                                    rng.choice(("running", "completed", "failed")),
                                    round(rng.uniform(0, 100), 2),
                                    rng.sample(self.ids, self.per_tx),
                                ),
                            )
                        self.sent += self.per_tx
                    time.sleep(0.001)
        except BaseException as exc:  # reported with the results
            self.error = exc


# ---- the replicator's own figures ----------------------------------------------------------


def scrape(url: str) -> dict[str, Any]:
    """Lag, the end-to-end histogram's cumulative buckets and the rows applied."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    lag, buckets, applied = 0.0, {}, 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "replicator_consumer_lag":
                lag += sample.value
            elif sample.name == "replicator_end_to_end_lag_seconds_bucket":
                buckets[float(sample.labels["le"])] = sample.value  # "+Inf" reads as inf
            elif sample.name == "replicator_rows_applied_total":
                applied += sample.value if sample.labels.get("kind") != "stale" else 0.0
    return {"lag": lag, "buckets": buckets, "applied": applied}


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """``histogram_quantile(q, increase(...))`` over two scrapes of cumulative buckets:
    linear within the bucket, the last finite bound when it falls in +Inf."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# ---- the soak ------------------------------------------------------------------------------


def start_run(env: dict[str, str], table: str, port: int) -> tuple[subprocess.Popen, Path]:
    child = {**os.environ, **env, "REPLICATOR_ENV_FILE": os.devnull}
    child.update(REPLICATOR_SESSION_TIMEOUT_MS="6000", REPLICATOR_METRICS_PORT=str(port))
    logfile = Path(tempfile.mkstemp(prefix="soak-run-", suffix=".log")[1])
    command = ["run", "--target-table", table, "--group-id", f"soak-{time.time_ns()}"]
    with logfile.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "replicator", *command],
            env=child,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    return proc, logfile


def wait_until(what: str, done: Any, timeout: float, proc: subprocess.Popen) -> float:
    started = time.monotonic()
    while not done():
        if proc.poll() is not None:
            raise RuntimeError(f"replicator run exited ({proc.returncode}) while {what}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not {what} within {timeout:.0f} s")
        time.sleep(1)
    return time.monotonic() - started


def soak(env: dict[str, str], args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    source, target = env["REPLICATOR_SOURCE_DSN"], env["REPLICATOR_TARGET_DSN"]
    log(f"seeding {args.rows} rows")
    before = sum(_topic_ends(env).values())
    insert_rows(source, args.rows, prefix=prefix)
    deadline = time.monotonic() + 900
    while sum(_topic_ends(env).values()) < before + args.rows and time.monotonic() < deadline:
        time.sleep(2)
    table = fresh_table(target, "bench_soak")
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    proc, logfile = start_run(env, table, port)
    try:
        log("replicator run: catching up with the topic")
        wait_until("caught up", lambda: count(target, table, prefix) >= args.rows, 1800, proc)
        rate = args.normal * args.factor
        ids = [f"{prefix}{n:08d}" for n in range(args.rows)]
        writer = Writer(source, ids, prefix, rate, args.tx_changes)
        log(f"writing {rate} changes/s for {args.minutes} min")
        minutes: list[dict[str, Any]] = []
        last = scrape(url)
        minute_start, sent_start, lags = last, 0, []
        writer.start()
        started = time.monotonic()
        for tick in range(1, int(args.minutes * 60 / SAMPLE_S) + 1):
            time.sleep(max(0.0, started + tick * SAMPLE_S - time.monotonic()))
            if proc.poll() is not None:
                raise RuntimeError(f"replicator run exited ({proc.returncode}) under load")
            last = scrape(url)
            lags.append(last["lag"])
            if tick % int(60 / SAMPLE_S) == 0:
                minutes.append(
                    {
                        "minute": len(minutes) + 1,
                        "changes_written": writer.sent - sent_start,
                        "rows_applied": last["applied"] - minute_start["applied"],
                        "lag_max": max(lags),
                        "lag_last": last["lag"],
                        "e2e_p50_s": quantile(0.5, minute_start["buckets"], last["buckets"]),
                        "e2e_p99_s": quantile(0.99, minute_start["buckets"], last["buckets"]),
                        "rss_mb": round(rss_mb(proc.pid), 1),
                    }
                )
                log(f"minute {minutes[-1]}")
                minute_start, sent_start, lags = last, writer.sent, []
        writer.stop_event.set()
        writer.join(60)
        if writer.error is not None:
            raise RuntimeError(f"the writer failed: {writer.error!r}")
        log("writer stopped: waiting for the replicator to catch up")
        with psycopg.connect(source, autocommit=True) as conn:
            expected = conn.execute(
                "SELECT count(*) FROM workflow_processes WHERE id LIKE %s", (prefix + "%",)
            ).fetchone()[0]  # type: ignore[index]
        drained = wait_until(
            "caught up after the load",
            lambda: count(target, table, prefix) >= expected and scrape(url)["lag"] == 0,
            900,
            proc,
        )
        peak = _hwm_kib(proc.pid) / 1024
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)
        logfile.unlink(missing_ok=True)
    log("replicator verify")
    res = _cli(env, "verify", "--target-table", table, "--catch-up-timeout", "0", "--json")
    verdict: dict[str, Any] = {"exit_code": res.returncode}
    with contextlib.suppress(ValueError, KeyError, TypeError):
        report = json.loads(res.stdout)
        verdict.update(status=report["status"], rows=report["source"]["rows"])
    return {
        "normal_rate": args.normal,
        "rate": rate,
        "tx_changes": args.tx_changes,
        "changes_written": writer.sent,
        "writer_behind_s_max": round(writer.behind_s, 3),
        "minutes": minutes,
        "drain_s": round(drained, 1),
        "peak_rss_mb": round(peak, 1),
        "verify": verdict,
    }


# ---- report --------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def markdown(report: dict[str, Any]) -> str:
    r = report["soak"]
    lines = [
        f"Soak, {report['started']} on {report['machine']['cpu']} ({report['machine']['cores']}"
        f" cores): {r['rate']:,} changes/s ({report['factor']} x the normal"
        f" {r['normal_rate']:,}/s) for {len(r['minutes'])} min, transactions of"
        f" {r['tx_changes']} changes; {r['changes_written']:,} changes written (the writer at"
        f" most {r['writer_behind_s_max']} s behind its schedule).",
        "",
        "| minute | changes written | rows applied | lag max | lag last | end-to-end p50 |"
        " end-to-end p99 | RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in r["minutes"]:
        lines.append(
            f"| {m['minute']} | {m['changes_written']:,} | {m['rows_applied']:,.0f} |"
            f" {m['lag_max']:,.0f} | {m['lag_last']:,.0f} | {_ms(m['e2e_p50_s'])} |"
            f" {_ms(m['e2e_p99_s'])} | {m['rss_mb']} MB |"
        )
    v = r["verify"]
    lines += [
        "",
        f"After the load: caught up in {r['drain_s']} s; peak RSS {r['peak_rss_mb']} MB;"
        f" `replicator verify`: {v.get('status', 'no report')} ({v.get('rows', '?')} rows,"
        f" exit {v['exit_code']}).",
    ]
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    minutes = report["soak"]["minutes"]
    x = [m["minute"] for m in minutes]
    fig, (lag, p99, rss) = plt.subplots(1, 3, figsize=(14, 4))
    lag.plot(x, [m["lag_max"] for m in minutes], marker="o", label="max")
    lag.plot(x, [m["lag_last"] for m in minutes], marker="o", label="at the minute's end")
    lag.set_title("Consumer lag (events)")
    lag.legend()
    p99.plot(x, [(m["e2e_p99_s"] or 0) * 1000 for m in minutes], marker="o", label="p99")
    p99.plot(x, [(m["e2e_p50_s"] or 0) * 1000 for m in minutes], marker="o", label="p50")
    p99.set_title("Source commit -> row applied (ms)")
    p99.legend()
    rss.plot(x, [m["rss_mb"] for m in minutes], marker="o")
    rss.set_title("RSS of replicator run (MB)")
    rss.set_ylim(bottom=0)
    for axis in (lag, p99, rss):
        axis.set_xlabel("minute")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-file", help="use a running stack instead of starting one")
    parser.add_argument("--normal", type=int, default=500, help="the normal rate, changes/s")
    parser.add_argument("--factor", type=int, default=10, help="the load: normal x factor")
    parser.add_argument("--minutes", type=int, default=10, help="how long the load is held")
    parser.add_argument("--rows", type=int, default=20_000, help="rows the updates pick from")
    parser.add_argument("--tx-changes", type=int, default=5, help="changes per transaction")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    with bench_stack(args.env_file, "soak") as env:
        result = soak(env, args, f"soak{started:%H%M%S}-")
    report = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "factor": args.factor,
        "soak": result,
    }
    write_report(Path(args.out) / f"{started:%Y-%m-%dT%H%M%S}-soak", report, markdown, chart)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
