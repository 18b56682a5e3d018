"""The Kubernetes manifests, checked offline: every overlay builds with kustomize (`kubectl
kustomize`), every object validates against the Kubernetes schemas, and the project's policies
hold (probes, requests and limits, non-root, read-only root filesystem, an HPA and a PDB per
model, the gateway aimed at headless Services, the same images as compose, no Secret in the
repository). There is no cluster here: `kubectl apply` is the user's (README)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest
import yaml

from crimes.settings import deployment_port, deployment_settings
from tests.conftest import PROJECT_ROOT
from tests.support.identities import IDENTITY_VARIABLES

KUBERNETES = PROJECT_ROOT / "deploy" / "kubernetes"
OVERLAYS = ("local", "production")
# The oldest version the manifests target, and the newest the validator knows.
VERSIONS = ("1.33", "1.37")
MODELS = {"dtc": "dtc_model_prod", "lda": "lda_model_prod"}


def build(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with kustomize) is not on PATH")
    built = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return build(request.param)


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(
    objects: list[dict[str, Any]],
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            yield name, pod, container


def test_every_object_validates_against_the_kubernetes_schemas(
    objects: list[dict[str, Any]],
) -> None:
    for version in VERSIONS:
        for item in objects:
            kubernetes_validate.validate(item, version, strict=True)


def test_every_container_has_probes_resources_and_runs_unprivileged(
    objects: list[dict[str, Any]],
) -> None:
    found = list(containers(objects))
    assert {name for name, _, _ in found} == {"dtc", "lda", "gateway", "redis", "mlflow"}
    for name, pod, container in found:
        assert container.get("readinessProbe"), name
        assert container.get("livenessProbe"), name
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) >= {"cpu", "memory"}, (name, bound)
        context = container["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert pod["automountServiceAccountToken"] is False, name


def test_each_model_scales_on_its_own_and_probes_grpc_health(
    objects: list[dict[str, Any]],
) -> None:
    hpas, pdbs = (
        of_kind(objects, "HorizontalPodAutoscaler"),
        of_kind(objects, "PodDisruptionBudget"),
    )
    services = of_kind(objects, "Service")
    for kind, model in MODELS.items():
        target = hpas[kind]["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", kind)
        assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu"
                   for m in hpas[kind]["spec"]["metrics"])  # fmt: skip
        assert pdbs[kind]["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": kind}
        assert services[kind]["spec"]["clusterIP"] == "None"  # headless
        port = deployment_port(kind)  # the deployment's own file, as compose and the image
        assert next(p["port"] for p in services[kind]["spec"]["ports"]) == port
        (container,) = of_kind(objects, "Deployment")[kind]["spec"]["template"]["spec"][
            "containers"
        ]
        assert container["readinessProbe"]["grpc"] == {"port": port, "service": model}
        assert container["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}
        metrics = int(deployment_settings(kind)["CRIMES_MODEL_METRICS_PORT"])
        assert {p["containerPort"] for p in container["ports"]} == {port, metrics}


def test_the_gateway_reaches_each_model_through_its_headless_service(
    objects: list[dict[str, Any]],
) -> None:
    services = of_kind(objects, "Service")
    (gateway,) = of_kind(objects, "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    for kind in MODELS:
        address = env[f"CRIMES_GATEWAY_{kind.upper()}_ADDRESS"]
        host = re.fullmatch(r"dns:///([a-z0-9-]+)(:\d+)?", address)
        assert host, address
        assert services[host.group(1)]["spec"]["clusterIP"] == "None", address
    assert "gateway" in of_kind(objects, "HorizontalPodAutoscaler")
    assert of_kind(objects, "Service")["gateway"]["spec"]["ports"][0]["port"] == deployment_port(
        "gateway"
    )
    # Prometheus scrapes the gateway's own metrics port, the API's never.
    metrics = deployment_port("gateway", "METRICS_PORT")
    assert {p["containerPort"] for p in gateway["ports"]} == {deployment_port("gateway"), metrics}
    pod = of_kind(objects, "Deployment")["gateway"]["spec"]["template"]["metadata"]
    assert pod["annotations"]["prometheus.io/port"] == str(metrics)


def test_network_policies_deny_by_default_and_allow_the_paths_of_the_system(
    objects: list[dict[str, Any]],
) -> None:
    policies = of_kind(objects, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny

    def peers(policy: str, direction: str) -> list[dict[str, Any]]:
        rules = policies[policy]["spec"][direction]
        key = "from" if direction == "ingress" else "to"
        return [peer for rule in rules for peer in rule.get(key, [])]

    def names(found: list[dict[str, Any]]) -> set[str]:
        return {p["podSelector"]["matchLabels"].get("app.kubernetes.io/name", "")
                for p in found if "podSelector" in p}  # fmt: skip

    assert names(peers("gateway", "egress")) == {"dtc", "lda", "redis", "mlflow", "seaweedfs"}
    assert names(peers("models", "ingress")) == {"gateway"}
    assert names(peers("models", "egress")) == {"mlflow", "seaweedfs"}
    assert names(peers("mlflow", "egress")) == {"seaweedfs"}
    # ("": the model pods, chosen by their component; Airflow by its namespace.)
    assert names(peers("seaweedfs", "ingress")) == {
        "",
        "gateway",
        "mlflow",
        "seaweedfs-buckets",
    }
    assert "egress" not in policies["seaweedfs"]["spec"]  # the object store calls nobody
    assert names(peers("redis", "ingress")) == {"gateway"}
    assert "egress" not in policies["redis"]["spec"]  # Redis calls nobody


def test_settings_from_a_configmap_and_credentials_from_secrets_never_committed(
    objects: list[dict[str, Any]],
) -> None:
    assert not of_kind(objects, "Secret")
    for name, _, container in containers(objects):
        for item in container.get("env", []):
            if re.search(r"KEY|SECRET|PASSWORD|TOKEN|URI$", item["name"]) and item["name"] not in (
                "MLFLOW_TRACKING_URI",
                "CRIMES_GATEWAY_TRACKING_URI",
            ):
                assert "secretKeyRef" in item.get("valueFrom", {}), (name, item)
        if name != "redis":
            refs = [s["configMapRef"]["name"] for s in container.get("envFrom", [])]
            assert any(ref.startswith("crimes-settings") for ref in refs), name
    for path in KUBERNETES.rglob("*.yaml"):
        text = path.read_text()
        assert not re.search(r"^kind:\s*Secret\b", text, re.MULTILINE), path
        assert "secretGenerator" not in text, path


def test_the_images_are_compose_s_and_production_pins_them(objects: list[dict[str, Any]]) -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
    built = {s["image"].split(":")[0] for s in compose["services"].values() if "build" in s}
    ours = {c["image"].split(":")[0] for _, _, c in containers(objects)}
    assert ours - {"redis"} == built - {"chicago-crimes/airflow"}
    for _, _, container in containers(objects):
        image, _, tag = container["image"].rpartition(":")
        assert image, container["image"]  # a tag is always given...
        assert tag != "latest", container["image"]  # ...and never a moving one


def test_the_production_overlay_adds_a_requests_per_second_metric_per_model() -> None:
    hpas = of_kind(build("production"), "HorizontalPodAutoscaler")
    for kind in MODELS:
        kinds = [m["type"] for m in hpas[kind]["spec"]["metrics"]]
        assert kinds == ["Resource", "Pods"], kinds
        assert hpas[kind]["spec"]["maxReplicas"] > hpas[kind]["spec"]["minReplicas"]


def test_airflow_runs_on_the_official_chart_with_the_project_image() -> None:
    values = yaml.safe_load((KUBERNETES / "airflow" / "values.yaml").read_text())
    compose = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
    airflow_image = compose["x-airflow"]["image"].split(":")[0]
    assert values["executor"] == "KubernetesExecutor"
    assert values["images"]["airflow"]["repository"] == airflow_image
    assert values["dags"]["gitSync"]["enabled"] is False  # the DAGs are baked in
    assert values["postgresql"]["enabled"] is False  # the cluster's own PostgreSQL
    env = {e["name"] for e in values["env"]}
    assert {"CRIMES_MONITOR_GATEWAY_URL", "MLFLOW_TRACKING_URI", "CRIMES_LAKE_ROOT"} <= env
    secrets = {s["envName"] for s in values["secret"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= secrets


def _secret_of(container: dict[str, Any], variable: str) -> str:
    (item,) = [e for e in container.get("env", []) if e["name"] == variable]
    return str(item["valueFrom"]["secretKeyRef"]["name"])


def test_seaweedfs_is_the_object_store_with_the_identities_of_every_deployment(
    objects: list[dict[str, Any]],
) -> None:
    store = of_kind(objects, "StatefulSet")["seaweedfs"]["spec"]["template"]["spec"]
    (init,) = store["initContainers"]
    (server,) = store["containers"]
    # The identities file, written from the Secrets at every start, into memory.
    assert init["command"][:3] == ["crimes", "object-store", "config"]
    written = init["command"][3]
    assert {e["name"] for e in init["env"]} == IDENTITY_VARIABLES
    assert all("secretKeyRef" in e["valueFrom"] for e in init["env"])
    volumes = {v["name"]: v for v in store["volumes"]}
    assert volumes["identities"]["emptyDir"]["medium"] == "Memory"
    mounted = {m["name"]: m for m in server["volumeMounts"]}
    assert mounted["identities"]["readOnly"] is True
    assert f"-s3.config={mounted['identities']['mountPath']}/identities.json" in server["args"]
    assert written.startswith("/config/")
    assert "-master.telemetry=false" in server["args"]
    assert server["image"] == "chrislusf/seaweedfs:4.48"
    assert store["securityContext"]["runAsUser"] == 1000
    for container in (init, server):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/status"
    # Least privilege: each part its own identity; the admin's for the bucket Job alone.
    deployments = {name: container for name, _, container in containers(objects)}
    for model in MODELS:
        assert _secret_of(deployments[model], "AWS_ACCESS_KEY_ID") == "crimes-object-store-reader"
    assert _secret_of(deployments["mlflow"], "AWS_ACCESS_KEY_ID") == "crimes-object-store-mlflow"
    assert _secret_of(deployments["gateway"], "AWS_ACCESS_KEY_ID") == (
        "crimes-object-store-prediction-log"
    )
    job = of_kind(objects, "Job")["seaweedfs-buckets"]["spec"]["template"]["spec"]
    (buckets,) = job["containers"]
    assert buckets["command"][:3] == ["crimes", "object-store", "buckets"]
    assert {e["name"] for e in buckets["env"]} == {
        "CRIMES_OBJECT_STORE_ADMIN_ACCESS_KEY",
        "CRIMES_OBJECT_STORE_ADMIN_SECRET_KEY",
    }
    settings = of_kind(objects, "ConfigMap")
    (configmap,) = [c for n, c in settings.items() if n.startswith("crimes-settings")]
    assert configmap["data"]["CRIMES_LAKE_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
    values = yaml.safe_load((KUBERNETES / "airflow" / "values.yaml").read_text())
    airflow_secrets = {s["envName"]: s["secretName"] for s in values["secret"]}
    assert airflow_secrets["AWS_ACCESS_KEY_ID"] == "crimes-object-store-writer"
