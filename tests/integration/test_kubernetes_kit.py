"""The kit's probes and metrics port are the ones the product serves: ``replicator run``
started with the kit's own settings (deploy/kubernetes/base/configmap.yaml; the
addresses of the cluster replaced by the local stack's) answers on the manifest's port,
at the probes' paths, and exposes every metric the PrometheusRule queries."""

from __future__ import annotations

import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import spawn_replicator, unique

pytestmark = pytest.mark.integration

KIT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "base"
ADDRESSES = ("REPLICATOR_KAFKA_BOOTSTRAP", "REPLICATOR_CONNECT_URL", "REPLICATOR_TOPIC")


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_probes_and_the_port_of_the_kit_are_what_run_serves(
    cli_env: dict[str, str], table: str
) -> None:
    settings = next(
        d for d in yaml.safe_load_all((KIT / "configmap.yaml").read_text())
        if d["metadata"]["name"] == "replicator-settings"
    )["data"]  # fmt: skip
    deployment = yaml.safe_load((KIT / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = int(settings["REPLICATOR_METRICS_PORT"])
    assert container["ports"][0]["containerPort"] == port
    paths = {container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe")}
    readiness = container["readinessProbe"]["httpGet"]["path"]
    env = {**cli_env, **{k: v for k, v in settings.items() if k not in ADDRESSES}}
    proc = spawn_replicator(env, table, unique("kit"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = get(port, "/healthz")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.5)
        for path in paths:
            assert get(port, path)[0] == 200, path
        assert get(port, readiness)[0] in (200, 503)  # served: ready or saying why not
        status, _ = get(port, "/nope")
        assert status == 404  # so the 200s above are the real paths, not a catch-all
        rule = yaml.safe_load((KIT / "prometheusrule.yaml").read_text())
        exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
        wanted = {
            re.sub(r"_(total|bucket|sum|count)$", "", n)
            for e in exprs
            for n in re.findall(r"\b(replicator_\w+)", e)
        }
        _, metrics = get(port, "/metrics")
        exposed = {
            re.sub(r"_(total|bucket|sum|count)$", "", n)
            for n in re.findall(r"^# TYPE (\w+) ", metrics, re.M)
        }
        assert len(wanted) >= 5 and wanted <= exposed, wanted - exposed
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
