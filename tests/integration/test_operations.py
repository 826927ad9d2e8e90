"""Running it as a service: metrics, health, scale-out, configuration errors."""

from __future__ import annotations

import random
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from replicator.clients.connect import ConnectClient, load_connector_file
from replicator.local.processes import free_port
from replicator.local.sample import insert_rows
from tests.integration.conftest import (
    RunningReplicator,
    StackInfo,
    execute,
    spawn_replicator,
    unique,
    wait_converged,
)
from tests.integration.test_replicate import churn

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:  # not listening (yet)
        return 0, ""


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text ``text`` (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_metrics_move_with_the_events(stack: StackInfo, table: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    p = unique("met")
    settings = stack.settings(target_table=table, group_id=unique("g"), metrics_port=port)
    insert_rows(stack.source_dsn, 1, prefix=f"{p}-first-")  # Debezium creates the topic
    with RunningReplicator(settings):
        wait_for(lambda: get(base + "/healthz")[0] == 200, what="/healthz")
        wait_for(lambda: get(base + "/readyz")[0] == 200, what="/readyz ready")
        _, before = get(base + "/metrics")
        insert_rows(stack.source_dsn, 300, prefix=f"{p}-")
        execute(
            stack.source_dsn,
            ("DELETE FROM workflow_processes WHERE id LIKE %s", (f"{p}-0000001%",)),
        )
        wait_converged(stack, table, p)
        wait_for(
            lambda: (
                metric(get(base + "/metrics")[1], "replicator_rows_applied_total", kind="delete")
                - metric(before, "replicator_rows_applied_total", kind="delete")
                >= 10
            ),
            what="delete counter",
        )
        wait_for(
            lambda: "replicator_consumer_lag{" in get(base + "/metrics")[1],
            timeout=15,
            what="consumer lag gauges (refreshed every 5 s)",
        )
        _, after = get(base + "/metrics")
        assert get(base + "/nope")[0] == 404
    created = metric(after, "replicator_events_consumed_total", op="c") - metric(
        before, "replicator_events_consumed_total", op="c"
    )
    assert created >= 300
    upserts = metric(after, "replicator_rows_applied_total", kind="upsert") - metric(
        before, "replicator_rows_applied_total", kind="upsert"
    )
    assert upserts >= 290  # an insert and delete of one row in one batch fold to the delete
    assert metric(after, "replicator_events_skipped_total", kind="tombstone") >= 10
    assert metric(after, "replicator_apply_seconds_count") > metric(
        before, "replicator_apply_seconds_count"
    )
    assert metric(after, "replicator_end_to_end_lag_seconds_count") >= 300
    assert metric(after, "replicator_last_applied_lsn") > 0
    assert 'replicator_replication_slot_lag_bytes{slot="replicator_workflow_processes"}' in after


def test_readyz_follows_the_target(stack: StackInfo, table: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = stack.settings(
        target_table=table, group_id=unique("g"), metrics_port=port, retry_backoff_max_s=1
    )
    insert_rows(stack.source_dsn, 1, prefix=unique("rdy0"))  # Debezium creates the topic
    with RunningReplicator(settings):
        wait_for(lambda: get(base + "/readyz")[0] == 200, what="ready")
        stack.stack.stop_postgres("immediate")
        try:
            wait_for(lambda: get(base + "/readyz")[0] == 503, timeout=30, what="unready")
            assert "target" in get(base + "/readyz")[1]
            assert get(base + "/healthz")[0] == 200  # alive all along
        finally:
            stack.stack.start_postgres()
        wait_for(lambda: get(base + "/readyz")[0] == 200, timeout=60, what="ready again")
        p = unique("rdy")
        insert_rows(stack.source_dsn, 20, prefix=f"{p}-")
        client = ConnectClient(stack.connect_url)
        name = load_connector_file()["name"]
        try:
            client.wait_running(name, timeout=20)
        except Exception:
            client.restart(name)
            client.wait_running(name, timeout=60)
        wait_converged(stack, table, p, timeout=90)


def test_scale_out_and_failover(stack: StackInfo, table: str, cli_env: dict[str, str]) -> None:
    """Two members share the partitions; each stopped one hands them over, nothing lost."""
    p = unique("grp")
    group = unique("g")
    a, b = spawn_replicator(cli_env, table, group), spawn_replicator(cli_env, table, group)
    writer = threading.Thread(target=churn, args=(stack.source_dsn, p, 150, 2500, 3), daemon=True)
    writer.start()
    c = None
    try:
        time.sleep(random.uniform(8, 10))
        a.send_signal(signal.SIGTERM)  # orderly: finishes its batch, leaves the group
        assert a.wait(30) == 0
        c = spawn_replicator(cli_env, table, group)
        time.sleep(8)
        b.send_signal(signal.SIGKILL)  # crash: its partitions move after the session timeout
        b.wait(10)
        writer.join(180)
        wait_converged(stack, table, p, timeout=120)
    finally:
        for proc in (a, b, c):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    logs = {name: proc.stderr.read() for name, proc in (("a", a), ("b", b), ("c", c)) if proc}
    for name, text in logs.items():
        assert "partitions assigned" in text, f"member {name} never got partitions:\n{text[-2000:]}"
