"""The whole system in containers, on a real Docker engine of this test's own: compose.yaml and
the Dockerfile as shipped, run with the README's compose commands on a copy of the repository,
through the seed's own flow (ETL DAG through Airflow's REST API on real rows in ./sources, the
training DAG on the ETL's Asset, both model services loading the champion, the gateway's
answers, scaling one model, least privilege in the object store, volumes that outlive `down`,
and `down -v` leaving nothing). Each step's time is printed; a container that breaks fails the
step with its log tail."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import shutil
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

from crimes import contract
from crimes.gateway.schemas import EXAMPLE
from crimes.lake import layout
from crimes.local.stack import core
from tests.conftest import PROJECT_ROOT
from tests.deploy.docker_engine import (
    DockerEngine,
    EngineError,
    build_standins,
    compose_command,
    docker_engine,
    run,
)
from tests.support.system import serving_system

pytestmark = [pytest.mark.e2e, pytest.mark.compose]

# A sample of real rows (the whole year is the benchmarks' job) and a small search: the
# training DAG fits a few minutes on 2 cores.
TRAINING_ROWS = 30_000
BATCH_ROWS = 1_000
SOURCE_FILE = "crimes-2024.csv"
ONE_SHOT = {"seaweedfs-config", "seaweedfs-buckets", "airflow-init"}
README_BLOCK = re.compile(r"## Deployment with Docker Compose\n\n```bash\n(.*?)```", re.S)


def readme_commands() -> list[str]:
    """The compose section's commands, as the README gives them (comments dropped)."""
    match = README_BLOCK.search((PROJECT_ROOT / "README.md").read_text())
    assert match, "README has no compose section with a bash block"
    return [line.split("  #")[0].strip() for line in match.group(1).splitlines() if line.strip()]


class Steps:
    """Each step timed and printed, as the issue's log asks."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.started = time.monotonic()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        with self.capsys.disabled():
            total = time.monotonic() - self.started
            print(
                f"\ncompose e2e: {name}: {time.monotonic() - started:.1f} s (total {total:.0f} s)"
            )


class Compose:
    """The README's commands in the project copy, against the test's engine."""

    def __init__(self, engine: DockerEngine, project: Path, env: dict[str, str]) -> None:
        self.engine = engine
        self.project = project
        # Compose v1 gives up on a daemon call after 60 s; the engine here shares 2 cores with
        # the builds and the stack's own start-up.
        self.env = {**engine.env, "COMPOSE_HTTP_TIMEOUT": "300", **env}
        self.command = compose_command()

    def __call__(self, *args: str, timeout: float = 900, check: bool = True) -> str:
        return run([*self.command, *args], env=self.env, cwd=self.project, timeout=timeout,
                   check=check)  # fmt: skip

    def readme(self, line: str, timeout: float = 900) -> str:
        """One README line: `cp ...` as it is, `docker compose ...` with this engine's compose.
        An `up` that fails is run once more, as its user would, and what it printed goes to the
        test's log: a stack that comes up only on the second try is seen, not hidden."""
        words = line.split()
        if words[0] == "cp":
            shutil.copy(self.project / words[1], self.project / words[2])
            return ""
        assert words[:2] == ["docker", "compose"], line
        if words[2] != "up":
            return self(*words[2:], timeout=timeout, check=False)
        try:
            return self(*words[2:], timeout=timeout)
        except EngineError as failed:
            warnings.warn(f"`{line}` failed once, run again: {failed}", stacklevel=2)
            return self(*words[2:], timeout=timeout)

    def containers(self) -> list[dict[str, Any]]:
        ids = self("ps", "-a", "-q").split()
        if not ids:
            return []
        found = json.loads(self.engine.docker("inspect", *ids))
        return [
            {
                "id": c["Id"][:12],
                "service": c["Config"]["Labels"]["com.docker.compose.service"],
                "status": c["State"]["Status"],
                "exit": c["State"]["ExitCode"],
                "health": (c["State"].get("Health") or {}).get("Status"),
            }
            for c in found
        ]

    def logs(self, service: str, lines: int = 40) -> str:
        return self("logs", "--no-color", f"--tail={lines}", service, check=False)

    def wait_healthy(self, timeout: float = 420) -> list[dict[str, Any]]:
        """Until every long-running container is healthy and every one-shot exited 0; a
        container that exits or turns unhealthy fails at once, with its log tail."""
        deadline = time.monotonic() + timeout
        while True:
            containers = self.containers()
            broken = [
                c
                for c in containers
                if (c["service"] in ONE_SHOT and c["status"] == "exited" and c["exit"] != 0)
                or (c["service"] not in ONE_SHOT and c["status"] in ("exited", "dead"))
                or c["health"] == "unhealthy"
                # Compose returns once it started every container: one left created failed.
                or c["status"] == "created"
            ]
            if broken:
                raise EngineError(
                    "\n".join(
                        f"{c['service']} ({c['id']}) is {c['health'] or c['status']} "
                        f"(exit {c['exit']}); its log:\n{self.logs(c['service'])}"
                        for c in broken
                    )
                )
            waiting = [
                c
                for c in containers
                if (c["service"] in ONE_SHOT and c["status"] != "exited")
                or (c["service"] not in ONE_SHOT and c["health"] != "healthy")
            ]
            if containers and not waiting:
                return containers
            if time.monotonic() > deadline:
                names = ", ".join(f"{c['service']} {c['health'] or c['status']}" for c in waiting)
                raise EngineError(f"not healthy after {timeout:.0f} s: {names}")
            time.sleep(2)

    def exec(self, service: str, *argv: str, index: int = 1, check: bool = True) -> str:
        return self("exec", "-T", f"--index={index}", service, *argv, timeout=120, check=check)


class Airflow:
    """Airflow's REST API as a user calls it: the admin's generated password, a token."""

    def __init__(self, compose: Compose, url: str, password: str) -> None:
        # The environment's password is the one Airflow holds: it made up none of its own.
        generated = "/opt/airflow/simple_auth_manager_passwords.json.generated"
        held = json.loads(compose.exec("airflow-apiserver", "cat", generated))
        assert held == {"admin": password}, held
        self.http = httpx.Client(base_url=url, timeout=30, trust_env=False)
        token = self.http.post("/auth/token", json={"username": "admin", "password": password})
        token.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def wait_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while self.http.get(f"/api/v2/dags/{dag_id}").status_code != 200:
            assert time.monotonic() < deadline, f"{dag_id} never parsed"
            time.sleep(2)

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        response = self.http.post(
            f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["dag_run_id"])

    def wait_run(self, dag_id: str, run_id: str | None, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.http.get(f"/api/v2/dags/{dag_id}/dagRuns").json()["dag_runs"]
            for found in runs:
                if run_id is not None and found["dag_run_id"] != run_id:
                    continue
                if found["state"] in ("success", "failed"):
                    return dict(found)
            time.sleep(5)
        raise TimeoutError(f"{dag_id} {run_id or '(any run)'} did not end in {timeout:.0f} s")


def _copy_of_the_repository(target: Path) -> Path:
    """The files git tracks (a clean checkout of the working tree): the build context."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    for name in filter(None, files):
        source = PROJECT_ROOT / name.decode()
        if source.is_file():
            (target / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name.decode())
    return target


def _host_ports(*names: str) -> dict[str, int]:
    """Free ports below the kernel's ephemeral range: the engine binds them minutes after they
    are picked (images build first), and a port from the ephemeral range may by then be the
    source port of any outgoing connection on the machine."""
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = core.free_port_block(1)
        if port not in ports.values():
            ports[names[len(ports)]] = port
    return ports


def _real_rows(real_data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first rows as the ETL's source file; later ones (never trained on) for the batch."""
    with gzip.open(real_data, "rt") as handle:
        frame = pd.read_csv(handle, dtype=str, nrows=TRAINING_ROWS + 5 * BATCH_ROWS)
    return frame.iloc[:TRAINING_ROWS], frame.iloc[TRAINING_ROWS:]


def _batch(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Real records as a client sends them: the gateway's features, JSON types."""
    from crimes.etl.preprocess import preprocess

    features, _ = preprocess(rows.reset_index(drop=True))
    features = features[list(contract.FEATURES)]  # not the label
    return [
        json.loads(json.dumps(r, default=float).replace("NaN", "null"))
        for r in features.head(BATCH_ROWS).to_dict("records")
    ]


def _requests_answered(compose: Compose, index: int) -> float:
    """ModelInfer calls a dtc container answered (its own Prometheus counter)."""
    metrics = compose.exec(
        "dtc", "python3", "-c",
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9151/metrics').read()"
        ".decode())",
        index=index,
    )  # fmt: skip
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("crimes_model_requests_total{") and 'status="OK"' in line
    )


def _s3(url: str, key: str, secret: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=url, aws_access_key_id=key, aws_secret_access_key=secret,
        region_name="us-east-1",
    )  # fmt: skip


def _lake_objects(client: Any, prefix: str = "") -> list[str]:
    """What the ETL and the training wrote (the prediction log grows as the gateway answers;
    a prefix: that part only)."""
    listed = client.list_objects_v2(Bucket="data", Prefix=prefix)
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    if prefix:
        return keys
    return [k for k in keys if not k.startswith(layout.PREDICTION_LOG_PREFIX)]


@pytest.mark.timeout(2400)
def test_the_compose_stack_runs_the_whole_flow(
    tmp_path: Path, real_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    step = Steps(capsys)
    commands = readme_commands()
    cp, _, scale, _, down_volumes = commands
    assert cp == "cp .env.example .env"
    assert scale.endswith("--scale dtc=2")
    assert down_volumes.endswith("down -v")

    project = _copy_of_the_repository(tmp_path / "project")
    ports = _host_ports("GATEWAY", "AIRFLOW", "MLFLOW", "S3", "PROMETHEUS")
    settings = {f"CRIMES_{name}_HOST_PORT": str(port) for name, port in ports.items()}
    settings |= {"CRIMES_TRAIN_TRIALS": "3", "CRIMES_TRAIN_CV_FOLDS": "2"}
    # The gateway's prediction log writes every few seconds (30 by default).
    settings |= {"CRIMES_PREDICTION_LOG_FLUSH_SECONDS": "3"}
    gateway_url = f"http://127.0.0.1:{ports['GATEWAY']}"
    s3_url = f"http://127.0.0.1:{ports['S3']}"
    training_rows, later_rows = _real_rows(real_data)
    (project / "sources").mkdir()
    training_rows.to_csv(project / "sources" / SOURCE_FILE, index=False)
    batch = _batch(later_rows)

    with docker_engine(tmp_path / "engine") as engine:
        with step("stand-ins of the third-party images"):
            build_standins(engine, project, tmp_path / "build")
        compose = Compose(engine, project, settings)
        try:
            _flow(step, compose, commands, gateway_url, s3_url, batch, ports, tmp_path)
        finally:
            # Whatever happened, nothing is left behind (the engine goes with its folder).
            compose("--profile", "all", "down", "-v", "--timeout", "10", check=False)


def _flow(
    step: Steps,
    compose: Compose,
    commands: list[str],
    gateway_url: str,
    s3_url: str,
    batch: list[dict[str, Any]],
    ports: dict[str, int],
    tmp_path: Path,
) -> None:
    cp, up, scale, down, down_volumes = commands
    profile = dict(
        line.split("=", 1)
        for line in (compose.project / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    with step(f"{cp}; {up} (builds the project's images)"):
        compose.readme(cp)
        compose.readme(up)
        compose.wait_healthy()

    with step("ETL DAG through Airflow's REST API on ./sources"):
        airflow = Airflow(
            compose, f"http://127.0.0.1:{ports['AIRFLOW']}", profile["AIRFLOW_ADMIN_PASSWORD"]
        )
        airflow.wait_dag("etl_chicago_crimes")
        run_id = airflow.trigger(
            "etl_chicago_crimes", {"source": f"/opt/crimes/sources/{SOURCE_FILE}", "year": 2024}
        )
        etl = airflow.wait_run("etl_chicago_crimes", run_id, timeout=600)
        assert etl["state"] == "success", compose.logs("airflow-scheduler", 80)

    with step("training DAG on the ETL's Asset"):
        training = airflow.wait_run("train_chicago_crimes", None, timeout=1200)
        assert training["run_type"] == "asset_triggered", training
        assert training["state"] == "success", compose.logs("airflow-scheduler", 80)

    http = httpx.Client(base_url=gateway_url, timeout=60, trust_env=False)
    with step("both model services load the champion"):
        deadline = time.monotonic() + 240
        while http.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, http.get("/health/ready").text
            time.sleep(2)
        # Each container's own check of the model it serves (the readiness Kubernetes asks).
        for service in ("dtc", "lda"):
            while "NOT_SERVING" in (
                status := compose.exec(service, "crimes", "probe", "model-service", check=False)
            ):
                assert time.monotonic() < deadline, (status, compose.logs(service))
                time.sleep(2)
            assert status.strip() == "SERVING", status

    with step("the reference example and 1,000 real records, against the local stack"):
        answer = http.post("/predict", json={"features": EXAMPLE})
        assert answer.json() == {"dtc_fbi_code_output": "07", "lda_fbi_code_output": "07"}
        versions = {k: v for k, v in answer.headers.items() if k.startswith("x-model-version")}
        in_containers = http.post("/predict/batch", json={"features": batch})
        assert in_containers.status_code == 200, in_containers.text
        assert len(in_containers.json()) == BATCH_ROWS
        # The same registered versions served by the project's local processes.
        reader = {
            "AWS_ACCESS_KEY_ID": profile["CRIMES_LAKE_READER_ACCESS_KEY"],
            "AWS_SECRET_ACCESS_KEY": profile["CRIMES_LAKE_READER_SECRET_KEY"],
        }
        local_env = {
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['MLFLOW']}",
            "CRIMES_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['MLFLOW']}",
            "CRIMES_GATEWAY_TRACKING_URI": f"http://127.0.0.1:{ports['MLFLOW']}",
            "CRIMES_LAKE_ROOT": "s3://data",
            "CRIMES_LAKE_S3_ENDPOINT_URL": s3_url,
            core.READER_ACCESS_KEY: reader["AWS_ACCESS_KEY_ID"],
            core.READER_SECRET_KEY: reader["AWS_SECRET_ACCESS_KEY"],
            **reader,
            # Only the containers' answers go to the compose stack's prediction log.
            "CRIMES_PREDICTION_LOG_ENABLED": "false",
        }
        with serving_system(tmp_path / "local", env=local_env) as local:
            local_http = httpx.Client(base_url=local["gateway"].url, timeout=60, trust_env=False)
            deadline = time.monotonic() + 120
            while local_http.get("/health/ready").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(1)
            in_local = local_http.post("/predict/batch", json={"features": batch})
        assert in_local.json() == in_containers.json()

    with step("the gateway's prediction log reaches the lake"):
        reader_s3 = _s3(s3_url, reader["AWS_ACCESS_KEY_ID"], reader["AWS_SECRET_ACCESS_KEY"])
        deadline = time.monotonic() + 60
        while len(logged := _lake_objects(reader_s3, layout.PREDICTION_LOG_PREFIX)) < 2:
            assert time.monotonic() < deadline, (logged, compose.logs("gateway", 40))
            time.sleep(2)
        rows = [
            row
            for key in logged
            for row in pq.read_table(
                io.BytesIO(reader_s3.get_object(Bucket="data", Key=key)["Body"].read())
            ).to_pylist()
        ]
        served = {(r["model"], r["model_version"]) for r in rows}
        assert served == {("dtc", versions["x-model-version-dtc"]),
                          ("lda", versions["x-model-version-lda"])}  # fmt: skip
        assert sum(r["model"] == "dtc" for r in rows) == BATCH_ROWS + 1

    with step(f"{scale}: both dtc containers answer through the gateway"):
        compose.readme(scale)
        containers = compose.wait_healthy()
        assert sum(c["service"] == "dtc" for c in containers) == 2
        before = [_requests_answered(compose, index) for index in (1, 2)]
        deadline = time.monotonic() + 120
        # Clients re-resolve the name when a connection reaches its maximum age (20 s).
        while True:
            http.post("/predict/batch", json={"features": batch[:50]}).raise_for_status()
            after = [_requests_answered(compose, index) for index in (1, 2)]
            if all(a > b for a, b in zip(after, before, strict=True)):
                break
            assert time.monotonic() < deadline, (before, after)
            time.sleep(1)

    with step("least privilege: the reader and the gateway"):
        stored = _lake_objects(reader_s3)
        assert any(key.endswith(".parquet") for key in stored), stored[:20]
        with pytest.raises(ClientError, match="AccessDenied"):
            reader_s3.put_object(Bucket="data", Key="reader-was-here.txt", Body=b"x")
        with pytest.raises(ClientError, match="AccessDenied"):
            reader_s3.delete_object(Bucket="data", Key=stored[0])
        with pytest.raises(ClientError, match="AccessDenied"):
            reader_s3.list_objects_v2(Bucket="mlflow")
        assert _lake_objects(reader_s3) == stored
        # The gateway's identity adds to the prediction log; nothing else of the lake is its.
        gateway_s3 = _s3(
            s3_url,
            profile["CRIMES_PREDICTION_LOG_ACCESS_KEY"],
            profile["CRIMES_PREDICTION_LOG_SECRET_KEY"],
        )
        with pytest.raises(ClientError, match="AccessDenied"):
            gateway_s3.get_object(Bucket="data", Key=stored[0])
        with pytest.raises(ClientError, match="AccessDenied"):
            gateway_s3.put_object(Bucket="data", Key=stored[0], Body=b"x")
        with pytest.raises(ClientError, match="AccessDenied"):
            gateway_s3.list_objects_v2(Bucket="data")
        assert _lake_objects(reader_s3) == stored

    with step("a broken model service fails the check with its log tail"):
        broken = compose.project / "broken.yaml"
        broken.write_text('services:\n  dtc:\n    command: ["crimes", "serv", "dtc"]\n')
        compose("-f", "compose.yaml", "-f", broken.name, "--profile", "all", "up", "-d",
                "--no-deps", "--scale", "dtc=1", "dtc", check=False)  # fmt: skip
        with pytest.raises(EngineError) as failed:
            compose.wait_healthy(timeout=120)
        assert "dtc" in str(failed.value)
        assert "No such command 'serv'" in str(failed.value)

    with step(f"{down}, then {up}: the registry, the champion and the lake stay"):
        compose.readme(down)
        compose.readme(up)
        compose.wait_healthy()
        deadline = time.monotonic() + 240
        while http.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, http.get("/health/ready").text
            time.sleep(2)
        again = http.post("/predict", json={"features": EXAMPLE})
        assert again.json() == {"dtc_fbi_code_output": "07", "lda_fbi_code_output": "07"}
        assert {k: v for k, v in again.headers.items() if k in versions} == versions
        assert _lake_objects(reader_s3) == stored

    with step(f"{down_volumes}: nothing left"):
        compose.readme(down_volumes)
        assert compose.engine.docker("ps", "-a", "-q").strip() == ""
        assert compose.engine.docker("volume", "ls", "-q").strip() == ""
        networks = compose.engine.docker("network", "ls", "--format", "{{.Name}}").split()
        assert sorted(networks) == ["bridge", "host", "none"]
