"""compose.yaml checked by a real Compose implementation's parser (Debian's docker-compose,
which needs no engine), and every command an image runs is one the local tests already run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from crimes.settings import deployment_port, deployment_settings
from tests.conftest import PROJECT_ROOT

ONE_SHOT = {"minio-buckets", "airflow-init"}
# The project's commands the images run, and the tests that run the same command locally.
RUN_LOCALLY = {
    ("crimes", "serve", "dtc"): "crimes.local.launch (model service processes in the tests)",
    ("crimes", "serve", "lda"): "crimes.local.launch",
    ("crimes", "serve", "gateway"): "crimes.local.launch (the gateway under uvicorn)",
    ("crimes", "serve", "dtc-challenger"): "tests/gateway/test_shadow_e2e.py",
    ("crimes", "serve", "lda-challenger"): "tests/gateway/test_shadow_e2e.py",
    ("crimes", "probe", "grpc"): "tests/gateway/test_replicas_e2e.py",
    ("crimes", "probe", "http"): "tests/gateway/test_replicas_e2e.py",
    ("crimes", "probe", "model-service"): "tests/gateway/test_replicas_e2e.py",
    ("crimes", "probe", "gateway"): "tests/gateway/test_replicas_e2e.py",
    ("mlflow", "server"): "crimes.local.stack (every e2e session's MLflow server)",
    ("airflow", "db", "migrate"): "crimes.local.airflow_runner.migrate (e2e airflow_env)",
    ("airflow", "api-server"): "crimes.local.airflow_runner.start_services (test_asset_wiring)",
    ("airflow", "scheduler"): "crimes.local.airflow_runner.start_services",
    ("airflow", "dag-processor"): "crimes.local.airflow_runner.start_services",
    ("airflow", "jobs", "check"): "tests/orchestration/test_asset_wiring_e2e.py",
}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose is missing: run scripts/install-system-deps.sh")
    checked = subprocess.run(
        [compose, "-f", "compose.yaml", "--profile", "all", "config"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(PROJECT_ROOT)},
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    parsed = yaml.safe_load(checked.stdout)
    assert isinstance(parsed, dict)
    return parsed


def test_every_long_running_service_has_a_healthcheck_restart_and_conditions(
    config: dict[str, Any],
) -> None:
    for name, service in config["services"].items():
        for dependency in (service.get("depends_on") or {}).values():
            assert dependency["condition"] in {
                "service_healthy",
                "service_completed_successfully",
                "service_started",
            }, name
        if name in ONE_SHOT:
            continue
        assert service.get("healthcheck", {}).get("test"), name
        assert service.get("restart") == "unless-stopped", name


def test_models_scale_on_their_own_and_the_gateway_spreads_over_replicas(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    for model in ("dtc", "lda"):
        assert "ports" not in services[model], f"{model} must not pin a host port (scaling)"
        assert "crimes" in services[model]["healthcheck"]["test"]
    environment = services["gateway"]["environment"]
    # No port: the gateway takes each model's port from that deployment's own file.
    assert environment["CRIMES_GATEWAY_DTC_ADDRESS"] == "dns:///dtc"
    assert environment["CRIMES_GATEWAY_LDA_ADDRESS"] == "dns:///lda"
    published = {int(p["published"]) for s in services.values() for p in s.get("ports", [])}
    assert {8080, 5001, 9000, 9001, 8800} <= published


def test_each_deployment_reads_its_own_settings_file_and_states_no_port_of_its_own(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    for deployment in ("dtc", "lda", "gateway", "dtc-challenger", "lda-challenger"):
        service = services[deployment]
        settings = deployment_settings(deployment)
        # compose merged the file into the environment: every setting of the file is there.
        for name, value in settings.items():
            assert service["environment"][name] == value, (deployment, name)
        command = " ".join(service["command"])
        assert "--port" not in command, deployment
        assert "--metrics-port" not in command, deployment
        assert service["healthcheck"]["test"][1:3] == ["crimes", "probe"], deployment
    (gateway_port,) = services["gateway"]["ports"]
    assert int(gateway_port["target"]) == deployment_port("gateway")


def _commands(config: dict[str, Any]) -> list[tuple[str, list[str]]]:
    found = []
    for name, service in config["services"].items():
        command = service.get("command")
        if isinstance(command, list):
            found.append((name, [str(part) for part in command]))
        test = service.get("healthcheck", {}).get("test")
        if isinstance(test, list) and test[0] == "CMD":
            found.append((f"{name} healthcheck", [str(part) for part in test[1:]]))
    return found


def test_every_command_an_image_runs_is_run_by_the_local_tests(config: dict[str, Any]) -> None:
    bin_dir = Path(sys.executable).parent
    for where, command in _commands(config):
        if command[0] not in ("crimes", "mlflow", "airflow"):
            continue  # third-party images' own tools (pg_isready, mc, redis-cli)
        key = next((k for k in RUN_LOCALLY if tuple(command[: len(k)]) == k), None)
        assert key is not None, f"{where}: {' '.join(command)} is not run by any local test"
        # The command exists in this project's environment, as the image has it.
        help_args = [*key, "--help"] if key[0] != "mlflow" else ["mlflow", "server", "--help"]
        ran = subprocess.run(
            [str(bin_dir / help_args[0]), *help_args[1:]],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert ran.returncode == 0, (where, ran.stderr[-500:])


def test_the_dockerfile_builds_from_the_lock_as_a_non_root_user() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "uv sync --locked --no-dev" in dockerfile
    assert "USER crimes" in dockerfile
    assert "airflow/dags /opt/airflow/dags" in dockerfile
    # The deployments' own settings files, found where the settings look for them.
    assert "COPY services /opt/crimes/services" in dockerfile
    assert "CRIMES_DEPLOYMENTS_DIR=/opt/crimes/services" in dockerfile
    targets = {line.split()[-1] for line in dockerfile.splitlines() if line.startswith("FROM")}
    assert {"runtime", "mlflow", "airflow"} <= targets


def test_each_model_has_a_challenger_deployment_the_gateway_shadows_to(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    environment = services["gateway"]["environment"]
    ports = set()
    for model in ("dtc", "lda"):
        challenger = services[f"{model}-challenger"]
        assert challenger["environment"]["CRIMES_MODEL_ALIAS"] == "challenger"
        assert (
            challenger["environment"]["CRIMES_MODEL_NAME"]
            == services[model]["environment"]["CRIMES_MODEL_NAME"]
        )
        assert "shadow" in challenger["profiles"]
        assert "ports" not in challenger
        assert environment[f"CRIMES_GATEWAY_{model.upper()}_CHALLENGER_ADDRESS"] == (
            f"dns:///{model}-challenger"
        )
        for deployment in (model, f"{model}-challenger"):
            ports |= {deployment_port(deployment), deployment_port(deployment, "METRICS_PORT")}
    # Run side by side on one machine (make demo), no two deployments share a port.
    assert len(ports) == 8
