"""deploy/: the alert rules checked and unit-tested by promtool, the dashboard's queries
against the metrics the replicator exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from replicator.observe.metrics import BatchHistogram, Health, Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed; scripts/bootstrap.sh installs Debian's prometheus")
    return subprocess.run(
        ["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=60
    )


def test_the_alert_rules_are_valid() -> None:
    res = promtool("check", "rules", "alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "9 rules found" in res.stdout


def test_the_alert_rules_fire_and_clear_on_synthetic_series() -> None:
    res = promtool("test", "rules", "alerts_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def exposed_metric_names() -> set[str]:
    metrics = Metrics()
    metrics.watch(Health(60))
    text = generate_latest(metrics.registry).decode()
    return {_family(n) for n in re.findall(r"^# TYPE (\w+) ", text, re.M)}


def _family(name: str) -> str:
    return re.sub(r"_(total|bucket|sum|count)$", "", name)


def queried(expr: str) -> set[str]:
    names = set(re.findall(r"\b(replicator_\w+)", expr))
    return {_family(n) for n in names}


def test_every_metric_the_dashboard_queries_is_exposed() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "replicator.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][1]["query"])
    wanted = set().union(*(queried(e) for e in exprs))
    assert wanted and wanted <= exposed_metric_names(), wanted - exposed_metric_names()
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in (
        "by op",
        "end-to-end",
        "per partition",
        "dead letters by reason",
        "slot",
        "apply",
    ):
        assert topic in titles


def test_every_metric_an_alert_uses_is_exposed() -> None:
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    exprs = re.findall(r"expr: (?:>-\n)?((?:.+\n)+?)\s+(?:for|labels):", rules)
    wanted = set().union(*(queried(e) for e in exprs))
    assert len(wanted) >= 5 and wanted <= exposed_metric_names()


def test_the_batch_histogram_is_exposed_as_prometheus_client_exposes_a_histogram() -> None:
    buckets = (0.05, 0.1, 1, 2.5, 300)
    values = [0.0, 0.05, 0.0500001, 0.1, 0.7, 1.0, 2.5, 299.0, 300.0, 301.0, 1e9]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("lag_seconds", "doc", buckets, ours)
    one_by_one = Histogram("lag_seconds", "doc", buckets=buckets, registry=theirs)
    batch.observe_many(values[:4])
    batch.observe_many([])
    batch.observe_many(values[4:-1])
    batch.observe_many(iter(values[-1:]))  # any iterable
    for value in values:
        one_by_one.observe(value)

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    assert lines(ours) == lines(theirs)
    assert 'lag_seconds_bucket{le="0.05"} 2.0' in lines(ours)  # le: a bound holds its value


def test_every_dead_letter_reason_is_a_series_at_zero_from_the_start() -> None:
    """An alert on the increase of a counter misses its first event when the series
    appears already at 1: every reason the code dead-letters for exists at 0."""
    import ast
    from pathlib import Path

    from replicator.errors import DEAD_LETTER_REASONS
    from replicator.observe.metrics import Metrics

    package = Path(__file__).resolve().parents[2] / "replicator"
    used: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "reason"
                and isinstance(node.value, ast.Constant)
            ):
                used.add(node.value.value)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if names in (["reason"], ["UNRESOLVED"]):
                    used.add(node.value.value)
    import replicator.stream.source.decode as decode

    documented = set(re.findall(r"^([a-z_]+) {2,}", decode.__doc__ or "", flags=re.M))
    assert "invalid_json" in documented  # the decoder's table of reasons, read
    used |= documented
    assert used <= set(DEAD_LETTER_REASONS), used - set(DEAD_LETTER_REASONS)
    metrics = Metrics()
    for reason in DEAD_LETTER_REASONS:
        sample = metrics.registry.get_sample_value(
            "replicator_events_dead_lettered_total", {"reason": reason}
        )
        assert sample == 0.0, reason


def _unassigned_member(group_id: str) -> tuple[Any, Any]:
    """A tracker and its health for a member of ``group_id`` with a 1 s progress line."""
    from replicator.observe.metrics import Health, Metrics
    from replicator.observe.tracker import Tracker
    from replicator.settings import Settings

    settings = Settings(
        target_dsn="postgresql://a@b.invalid/c",
        kafka_bootstrap="k.invalid:1",
        group_id=group_id,
        progress_interval_s=1,
    )
    health = Health(120, settings.group_id, settings.topic)
    return health, Tracker(settings, Metrics(), health)


def test_a_member_without_partitions_says_so_where_operators_look(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After longer than a join takes: a warning naming the group, the topic and what to
    check; /readyz (and replicator_unready) explaining it."""
    import logging
    import time

    health, tracker = _unassigned_member("g-stuck")
    with caplog.at_level(logging.WARNING):
        tracker.progress([], force=True)  # just started: joining is normal
        assert "no partition assigned" not in caplog.text
        health.unassigned_since = time.monotonic() - 120
        tracker.progress([], force=True)
    assert "no partition assigned" in caplog.text
    record = next(r for r in caplog.records if r.getMessage() == "no partition assigned")
    assert record.group == "g-stuck" and "another REPLICATOR_GROUP_ID" in record.check  # type: ignore[attr-defined]
    why = health.problems()["no_partitions"]
    assert "g-stuck" in why and "does the topic" in why
    tracker.assigned([0, 1])
    tracker.assigned([])  # revoked: the clock starts again
    assert time.monotonic() - health.unassigned_since < 5


def test_a_member_tells_a_full_group_from_a_rebalance_that_never_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The group's join state, from the client's statistics, picks the hint: a stable
    group that gave the member nothing has enough members; a rebalance that has not
    completed for minutes is the broker's coordinator, escaped with a new group id."""
    import logging
    import time

    from replicator.observe.metrics import GroupState, unassigned_hint

    full = unassigned_hint("t", GroupState("steady", 0.0))
    assert "stable" in full and "more members than partitions" in full
    assert "REPLICATOR_GROUP_ID" not in full
    stuck = unassigned_hint("t", GroupState("wait-sync", 312.4))
    assert "has not completed for 312s" in stuck and "wait-sync" in stuck
    assert "another REPLICATOR_GROUP_ID" in stuck and "positions are kept" in stuck
    assert unassigned_hint("t", GroupState("init", 40.0)) == unassigned_hint("t")

    health, tracker = _unassigned_member("g-wedged")
    health.unassigned_since = time.monotonic() - 120
    with caplog.at_level(logging.WARNING):
        tracker.progress([], force=True, group=GroupState("wait-join", 118.0))
    record = next(r for r in caplog.records if r.getMessage() == "no partition assigned")
    assert record.join_state == "wait-join"  # type: ignore[attr-defined]
    assert "has not completed for 118s" in record.check  # type: ignore[attr-defined]
    assert "has not completed for 118s" in health.problems()["no_partitions"]
