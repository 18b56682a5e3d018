"""compose.yaml checked by a real Compose implementation's parser (Debian's docker-compose,
which needs no engine), and every command an image runs is one the local tests already run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from crimes.settings import deployment_port, deployment_settings
from tests.conftest import PROJECT_ROOT
from tests.support.identities import IDENTITY_VARIABLES

ONE_SHOT = {"seaweedfs-config", "seaweedfs-buckets", "airflow-init"}
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
    ("crimes", "object-store", "config"): "tests/lake/test_object_store.py",
    ("crimes", "object-store", "buckets"): "tests/lake/test_object_store.py",
    ("mlflow", "server"): "crimes.local.stack (every e2e session's MLflow server)",
    ("airflow", "db", "migrate"): "crimes.local.airflow_runner.migrate (e2e airflow_env)",
    ("crimes", "airflow", "api-server"): "crimes.local.airflow_runner.start_services",
    ("airflow", "scheduler"): "crimes.local.airflow_runner.start_services",
    ("airflow", "dag-processor"): "crimes.local.airflow_runner.start_services",
    ("airflow", "jobs", "check"): "tests/orchestration/test_asset_wiring_e2e.py",
}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    checked = compose_config("--env-file", ".env.example")  # the local-only profile
    assert checked.returncode == 0, checked.stderr
    parsed = yaml.safe_load(checked.stdout)
    assert isinstance(parsed, dict)
    return parsed


def compose_config(*options: str, env: dict[str, str] | None = None) -> Any:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose is missing: run scripts/install-system-deps.sh")
    return subprocess.run(
        [compose, "-f", "compose.yaml", *options, "--profile", "all", "config"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(PROJECT_ROOT), **(env or {})},
    )  # fmt: skip


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
    published = {port_of(p)[1] for s in services.values() for p in s.get("ports", [])}
    assert {8080, 5001, 8333, 8800} <= published


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
    target = (
        gateway_port["target"]
        if isinstance(gateway_port, dict)
        else gateway_port.split(":")[-1].split("/")[0]
    )
    assert int(target) == deployment_port("gateway")


def port_of(entry: Any) -> tuple[str | None, int]:
    """A published port as compose's config prints it (`127.0.0.1:9000:9000/tcp`, or a
    mapping): its host address (None: every interface) and its host port."""
    if isinstance(entry, dict):
        return entry.get("host_ip"), int(entry["published"])
    parts = str(entry).split("/")[0].split(":")
    return (parts[0] if len(parts) == 3 else None), int(parts[-2])


def mount_of(entry: Any) -> tuple[str, str, bool]:
    """A volume as compose's config prints it (v1: `source:target:mode`, v2: a mapping):
    its source, its target and whether it is read-only."""
    if isinstance(entry, dict):
        return str(entry["source"]), str(entry["target"]), bool(entry.get("read_only"))
    source, target, *mode = str(entry).split(":")
    return source, target, mode == ["ro"]


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
    helps: dict[tuple[str, ...], str] = {}  # each command's --help once, for its first user
    for where, command in _commands(config):
        if command[0] not in ("crimes", "mlflow", "airflow"):
            continue  # third-party images' own tools (pg_isready, curl, redis-cli)
        key = next((k for k in RUN_LOCALLY if tuple(command[: len(k)]) == k), None)
        assert key is not None, f"{where}: {' '.join(command)} is not run by any local test"
        help_args = (*key, "--help") if key[0] != "mlflow" else ("mlflow", "server", "--help")
        helps.setdefault(help_args, where)

    def ran(help_args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_dir / help_args[0]), *help_args[1:]],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    # The command exists in this project's environment, as the image has it (the --help runs
    # side by side: each is mostly the start of a Python process).
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for (help_args, where), result in zip(helps.items(), pool.map(ran, helps), strict=True):
            assert result.returncode == 0, (where, help_args, result.stderr[-500:])


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


LOCAL_PROFILE = {
    line.split("=", 1)[0]: line.split("=", 1)[1]
    for line in (PROJECT_ROOT / ".env.example").read_text().splitlines()
    if line and not line.startswith("#")
}
REQUIRED = (
    "POSTGRES_PASSWORD",
    "CRIMES_OBJECT_STORE_ADMIN_ACCESS_KEY",
    "CRIMES_OBJECT_STORE_ADMIN_SECRET_KEY",
    "AIRFLOW_JWT_SECRET",
    "CRIMES_GATEWAY_API_KEY",
    "CRIMES_LAKE_WRITER_ACCESS_KEY",
    "CRIMES_LAKE_WRITER_SECRET_KEY",
    "CRIMES_LAKE_READER_ACCESS_KEY",
    "CRIMES_LAKE_READER_SECRET_KEY",
    "MLFLOW_STORE_ACCESS_KEY",
    "MLFLOW_STORE_SECRET_KEY",
)


@pytest.mark.parametrize("missing", REQUIRED)
def test_compose_starts_nothing_without_each_credential(missing: str) -> None:
    """Outside the local-only profile every credential must be given: no default runs."""
    given = {k: v for k, v in LOCAL_PROFILE.items() if k != missing}
    refused = compose_config(env=given)
    assert refused.returncode != 0
    assert f"{missing} is required" in refused.stderr
    assert compose_config(env=LOCAL_PROFILE).returncode == 0


def test_no_default_credential_and_no_change_me_value() -> None:
    compose = (PROJECT_ROOT / "compose.yaml").read_text()
    assert "change-me" not in compose
    assert "change-me" not in (PROJECT_ROOT / ".env.example").read_text()
    assert "local-only}" not in compose  # a ${VAR:-...local-only} default would run anywhere


def test_the_local_only_profile_publishes_on_loopback_only(config: dict[str, Any]) -> None:
    """.env.example: every port on 127.0.0.1, the gateway's too, the only one without a key."""
    for name, service in config["services"].items():
        for port in service.get("ports", []):
            host, _ = port_of(port)
            assert host == "127.0.0.1", (name, port)
    environment = config["services"]["gateway"]["environment"]
    assert environment["CRIMES_GATEWAY_API_KEY"] == ""
    assert environment["CRIMES_GATEWAY_ALLOW_NO_API_KEY"] == "true"


def test_any_other_deployment_needs_a_key_for_the_gateway_to_start(tmp_path: Path) -> None:
    """Without the local-only flag the gateway refuses to start keyless (tests/security)."""
    env = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in (PROJECT_ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    env.pop("CRIMES_GATEWAY_ALLOW_NO_API_KEY")
    env.update(CRIMES_GATEWAY_API_KEY="a-real-key", CRIMES_GATEWAY_HOST_BIND="0.0.0.0")
    env_file = tmp_path / "deployment.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    checked = compose_config("--env-file", str(env_file))
    assert checked.returncode == 0, checked.stderr
    gateway = yaml.safe_load(checked.stdout)["services"]["gateway"]
    assert gateway["environment"]["CRIMES_GATEWAY_ALLOW_NO_API_KEY"] == "false"
    assert [port_of(p)[0] for p in gateway["ports"]] == ["0.0.0.0"]


def test_every_container_gets_least_privilege_and_a_memory_limit(
    config: dict[str, Any],
) -> None:
    ours = {n for n, s in config["services"].items() if s["image"].startswith("chicago-crimes/")}
    assert {"dtc", "lda", "gateway", "mlflow", "airflow-scheduler"} <= ours
    for name, service in config["services"].items():
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("mem_limit"), name
        if name in ours or name in {"redis", "prometheus", "seaweedfs"}:
            assert service.get("cap_drop") == ["ALL"], name
        # One capability given back, to hand the identities file to SeaweedFS' user.
        assert service.get("cap_add", []) == (["CHOWN"] if name == "seaweedfs-config" else [])
        # Read-only root filesystems: every part but PostgreSQL and Airflow.
        if name != "postgres" and not name.startswith("airflow"):
            assert service.get("read_only") is True, name


def test_base_and_third_party_images_are_pinned_to_release_tags(config: dict[str, Any]) -> None:
    # An exact release: x.y.z (PostgreSQL's and SeaweedFS' are x.y).
    pinned = re.compile(
        r".+:v?\d+\.\d+\.\d+[-\w.]*$|^postgres:\d+\.\d+-|^chrislusf/seaweedfs:\d+\.\d+$"
    )
    for name, service in config["services"].items():
        image = service["image"]
        if not image.startswith("chicago-crimes/"):
            assert pinned.match(image), (name, image)
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("FROM ") and " AS " in line and "runtime AS" not in line:
            assert pinned.match(line.split()[1]), line
        if line.startswith("COPY --from=") and "/" in line.split()[1]:  # an image, not a stage
            assert pinned.match(line.split()[1].removeprefix("--from=")), line


def test_each_part_gets_only_the_object_store_credentials_it_needs(
    config: dict[str, Any],
) -> None:
    """The writer for the ETL and training (Airflow), the reader for the model services,
    MLflow's own for its server, the prediction log's for the gateway; the admin identity only
    for the two object-store jobs (the identities file, the buckets)."""
    services = config["services"]
    key = {
        name: service.get("environment", {}).get("AWS_ACCESS_KEY_ID")
        for name, service in services.items()
    }
    profile = LOCAL_PROFILE
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        assert key[name] == profile["CRIMES_LAKE_WRITER_ACCESS_KEY"], name
    for name in ("dtc", "lda", "dtc-challenger", "lda-challenger"):
        assert key[name] == profile["CRIMES_LAKE_READER_ACCESS_KEY"], name
    assert key["mlflow"] == profile["MLFLOW_STORE_ACCESS_KEY"]
    assert key["gateway"] == profile["CRIMES_PREDICTION_LOG_ACCESS_KEY"]
    assert (
        services["gateway"]["environment"]["AWS_SECRET_ACCESS_KEY"]
        == (profile["CRIMES_PREDICTION_LOG_SECRET_KEY"])
    )
    admin = "an-admin-secret-no-other-setting-has"
    rendered = compose_config(env={**LOCAL_PROFILE, "CRIMES_OBJECT_STORE_ADMIN_SECRET_KEY": admin})
    assert rendered.returncode == 0, rendered.stderr
    holding_admin = {
        name
        for name, service in yaml.safe_load(rendered.stdout)["services"].items()
        if admin in str(service.get("environment"))
    }
    assert holding_admin == {"seaweedfs-config", "seaweedfs-buckets"}


def test_seaweedfs_reads_the_identities_the_config_job_writes_from_the_environment(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    job, store = services["seaweedfs-config"], services["seaweedfs"]
    # The job: no network at all, every identity's keys, the file handed to SeaweedFS' user.
    assert job["network_mode"] == "none"
    assert set(job["environment"]) == IDENTITY_VARIABLES
    command = job["command"]
    assert command[:3] == ["crimes", "object-store", "config"]
    assert command[command.index("--owner") + 1] == f"{store['user']}"
    written = Path(command[3])
    (config_volume,) = [m for m in map(mount_of, job["volumes"]) if m[1] == str(written.parent)]
    # SeaweedFS mounts the same volume, read-only, and reads that file.
    (mounted,) = [m for m in map(mount_of, store["volumes"]) if m[0] == config_volume[0]]
    assert mounted[2] is True
    read = next(a for a in store["command"] if a.startswith("-s3.config="))
    assert Path(read.removeprefix("-s3.config=")) == Path(mounted[1]) / written.name
    assert "-master.telemetry=false" in store["command"]
    assert store["depends_on"]["seaweedfs-config"]["condition"] == (
        "service_completed_successfully"
    )
    assert "CRIMES_OBJECT_STORE_ADMIN_SECRET_KEY" in services["seaweedfs-buckets"]["environment"]
    assert services["seaweedfs-buckets"]["depends_on"]["seaweedfs"]["condition"] == (
        "service_healthy"
    )


def test_only_the_object_stores_clients_are_on_its_network(config: dict[str, Any]) -> None:
    services = config["services"]
    on_it = {n for n, s in services.items() if "object-store" in (s.get("networks") or {})}
    assert set(services["seaweedfs"]["networks"]) == {"object-store"}
    assert on_it == {
        "seaweedfs",
        "seaweedfs-buckets",
        "mlflow",
        *(n for n in services if n.startswith("airflow")),
        "dtc",
        "lda",
        "dtc-challenger",
        "lda-challenger",
        "gateway",  # its prediction log (its identity reaches nothing else)
    }


def test_the_portal_token_reaches_only_the_etl(config: dict[str, Any]) -> None:
    """Each service gets only the secrets it uses: the app token is Airflow's (the ETL's)."""
    holders = {
        name
        for name, service in config["services"].items()
        if "CRIMES_APP_TOKEN" in (service.get("environment") or {})
    }
    assert holders
    assert all(name.startswith("airflow") for name in holders), holders


def test_airflow_admin_password_is_the_environments_and_only_the_api_servers(
    config: dict[str, Any],
) -> None:
    """Airflow's login is the admin's password from .env, held by the part that logs users in
    (its scheduler and DAG processor never see it)."""
    holders = {
        name: service["environment"]["AIRFLOW_ADMIN_PASSWORD"]
        for name, service in config["services"].items()
        if "AIRFLOW_ADMIN_PASSWORD" in (service.get("environment") or {})
    }
    assert holders == {"airflow-apiserver": LOCAL_PROFILE["AIRFLOW_ADMIN_PASSWORD"]}
    command = config["services"]["airflow-apiserver"]["command"]
    assert command[:3] == ["crimes", "airflow", "api-server"]
