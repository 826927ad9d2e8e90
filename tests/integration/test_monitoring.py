"""A real Prometheus scraping a running replicator: the series arrive with their labels,
and the alerts fire when the target becomes unreachable or the replicator stops, and
clear when they come back.  The rules are deploy/prometheus/alerts.yml as written; only
their ``for:`` durations are set to 0 so that the test takes seconds, not minutes."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator.local.processes import free_port, wait_for
from replicator.local.sample import insert_rows
from tests.integration.conftest import RunningReplicator, StackInfo, new_database, unique

pytestmark = pytest.mark.integration

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


class Proxy:
    """A TCP relay to PostgreSQL that the test can cut (connections refused) and restore."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self.open()

    def open(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        # shutdown wakes the threads blocked in accept and recv: close alone does not, and a
        # listening socket closed under a blocked accept would go on accepting
        server, self._server = self._server, None
        for sock in [server, *self._conns] if server else self._conns:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with suppress(OSError):
                    s.close()


@contextmanager
def prometheus(target_port: int) -> Iterator[Callable[[str], Any]]:
    """A Prometheus scraping 127.0.0.1:``target_port`` every second as job "replicator"."""
    home = Path(tempfile.mkdtemp(prefix="replicator-prometheus-"))
    rules = re.sub(r"^(\s+)for: .*$", r"\1for: 0s", ALERTS.read_text(), flags=re.M)
    (home / "alerts.yml").write_text(rules)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(home / "alerts.yml")],
        "scrape_configs": [
            {
                "job_name": "replicator",
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }
        ],
    }
    (home / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(home / "prometheus.log").open("w"),
    )

    def api(path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5) as resp:
            return json.loads(resp.read())["data"]

    try:
        assert wait_for(lambda: _answers(api), 30), (home / "prometheus.log").read_text()[-2000:]
        yield api
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(home, ignore_errors=True)


def _answers(api: Callable[[str], Any]) -> bool:
    try:
        api("status/buildinfo")
        return True
    except OSError:
        return False


def query(api: Callable[[str], Any], expr: str) -> list[dict]:
    return api("query?" + urllib.parse.urlencode({"query": expr}))["result"]


def firing(api: Callable[[str], Any]) -> set[str]:
    return {a["labels"]["alertname"] for a in api("alerts")["alerts"] if a["state"] == "firing"}


def test_prometheus_scrapes_the_series_and_the_alerts_fire_and_clear(stack: StackInfo) -> None:
    target = new_database(stack, "promtgt")
    proxy = Proxy(stack.stack.state.pg.port or 0)
    proxied = psycopg.conninfo.make_conninfo(target, host="127.0.0.1", port=proxy.port)
    metrics_port = free_port()
    settings = stack.settings(
        target_dsn=proxied,
        group_id=unique("g"),
        metrics_port=metrics_port,
        metrics_host="127.0.0.1",
        stall_after_s=3,
        retry_backoff_max_s=1,
    )
    p = unique("prom")
    with prometheus(metrics_port) as api:
        running = RunningReplicator(settings).__enter__()
        try:
            insert_rows(stack.source_dsn, 50, prefix=f"{p}-a-")
            assert wait_for(lambda: query(api, 'up{job="replicator"} == 1'), 30)
            assert wait_for(lambda: query(api, "sum(replicator_rows_applied_total) > 0"), 60), (
                query(api, "replicator_rows_applied_total")
            )
            ops = {r["metric"].get("op") for r in query(api, "replicator_events_consumed_total")}
            assert "c" in ops
            assert wait_for(lambda: query(api, "replicator_consumer_lag"), 30)  # every 5 s
            partitions = {r["metric"]["partition"] for r in query(api, "replicator_consumer_lag")}
            assert partitions <= {"0", "1", "2", "3"}
            reasons = {r["metric"]["reason"] for r in query(api, "replicator_unready")}
            assert reasons == {"no_partitions", "target_unreachable", "stalled"}
            assert not firing(api) & {"ReplicatorDown", "ReplicatorStalled"}

            proxy.cut()  # the target becomes unreachable while changes keep coming
            insert_rows(stack.source_dsn, 50, prefix=f"{p}-b-")
            want = {"ReplicatorStalled", "ReplicatorTargetUnreachable"}
            assert wait_for(lambda: want <= firing(api), 90), firing(api)

            proxy.open()
            assert wait_for(lambda: not firing(api) & want, 90), firing(api)
        finally:
            running.stop()
        assert wait_for(lambda: "ReplicatorDown" in firing(api), 30), firing(api)
        with RunningReplicator(settings):
            assert wait_for(lambda: "ReplicatorDown" not in firing(api), 30), firing(api)
    proxy.cut()
