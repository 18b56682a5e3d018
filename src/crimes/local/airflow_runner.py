"""Airflow on this machine, as local processes: its environment, metadata DB and DAG runs.

Used by the tests (`airflow dags test`) and by the demo. Airflow reads everything from
`AIRFLOW__...` variables, so one function builds them; its metadata DB is a database on the
system PostgreSQL when one is configured, SQLite in AIRFLOW_HOME otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from crimes.ops.logs import get_logger

log = get_logger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DAGS_FOLDER = PROJECT_ROOT / "airflow" / "dags"


def metadata_url(postgres_url: str | None, database: str, home: Path) -> str:
    if not postgres_url:
        return f"sqlite:///{home / 'airflow.db'}"
    parts = urlsplit(postgres_url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg2", path=f"/{database}"))


def environment(
    home: Path,
    sql_alchemy_conn: str,
    extra: dict[str, str] | None = None,
    dags_folder: Path = DAGS_FOLDER,
) -> dict[str, str]:
    """The process environment for any `airflow` command of this project."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # Airflow starts its parts as `airflow ...` from PATH.
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    env.update(extra or {})
    home.mkdir(parents=True, exist_ok=True)
    return env


def airflow(
    env: dict[str, str], *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "airflow"), *args]
    log.info("airflow.command", args=list(args))
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"`airflow {' '.join(args)}` exited {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def migrate(env: dict[str, str]) -> None:
    airflow(env, "db", "migrate", timeout=300)


def dags_test(
    env: dict[str, str], dag_id: str, conf: dict[str, Any] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run a whole DAG in-process (no scheduler); a failed task makes it exit non-zero."""
    args = ["dags", "test", dag_id]
    if conf:
        args += ["--conf", json.dumps(conf)]
    return airflow(env, *args, timeout=timeout, check=False)


# -- Airflow as running services (api-server, scheduler, dag-processor) --------------------

SERVICES = ("api-server", "scheduler", "dag-processor")


def service_environment(env: dict[str, str], api_port: int) -> dict[str, str]:
    """What the services need on top of `environment()`: a LocalExecutor, the execution API
    address the task runners call back, and one JWT secret shared by all components."""
    import secrets

    out = dict(env)
    out.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": env.get(
                "AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(32)
            ),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        }
    )
    return out


def start_services(env: dict[str, str], state_dir: Path, api_port: int) -> dict[str, str]:
    """Start Airflow's parts as processes of their own (SIGTERM stops each cleanly, unlike
    `airflow standalone`); returns the environment they run with. Waits for the API."""
    from crimes.local.stack import procs

    service_env = service_environment(env, api_port)
    store = procs.PidStore(state_dir / "pids")
    bin_dir = Path(sys.executable).parent
    for name in SERVICES:
        if store.running(f"airflow-{name}"):
            continue
        # The API server as the deployments start it: `crimes airflow api-server` (the admin's
        # password from the environment; here login is off, every caller an admin).
        args = (
            [str(bin_dir / "crimes"), "airflow", name, "--port", str(api_port)]
            if name == "api-server"
            else [str(bin_dir / "airflow"), name]
        )
        procs.launch(
            f"airflow-{name}",
            args,
            env=service_env,
            log_path=state_dir / "logs" / f"airflow-{name}.log",
            cwd=state_dir,
            address=f"http://127.0.0.1:{api_port}" if name == "api-server" else "",
            store=store,
        )
    api = AirflowApi(f"http://127.0.0.1:{api_port}")
    if not api.wait_healthy(timeout=180):
        logs = procs.log_tail(state_dir / "logs" / "airflow-api-server.log")
        stop_services(state_dir)
        raise RuntimeError(f"Airflow's API did not become healthy:\n{logs}")
    return service_env


def stop_services(state_dir: Path) -> list[str]:
    from crimes.local.stack import procs

    store = procs.PidStore(state_dir / "pids")
    records = [r for n in SERVICES if (r := store.read(f"airflow-{n}")) is not None]
    stopped = procs.stop(records, grace_seconds=20)
    for record in records:
        store.remove(record.name)
    return stopped


class AirflowApi:
    """The few calls of Airflow's REST API (v2) the project makes."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)
        self._token: str | None = None

    def wait_healthy(self, timeout: float) -> bool:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                health = self.client.get("/api/v2/monitor/health")
                if health.status_code == 200 and all(
                    part.get("status") in ("healthy", None)
                    for part in health.json().values()
                    if isinstance(part, dict)
                ):
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        return False

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            # With SIMPLE_AUTH_MANAGER_ALL_ADMINS every caller is an admin; a token is still
            # needed and is handed out without credentials.
            response = self.client.get("/auth/token")
            if response.status_code >= 400:
                response = self.client.post("/auth/token", json={})
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return {"Authorization": f"Bearer {self._token}"}

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, headers=self._headers(), **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text}")
        return response.json() if response.content else None

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def wait_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Until the dag-processor has parsed the DAG into the metadata DB."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.client.get(f"/api/v2/dags/{dag_id}", headers=self._headers())
            if response.status_code == 200:
                return
            time.sleep(1)
        raise RuntimeError(f"DAG {dag_id} never appeared in Airflow")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self._call(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            json={"logical_date": None, "conf": conf or {}},
        )
        return str(run["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        result = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})
        runs: list[dict[str, Any]] = result["dag_runs"]
        return runs

    def wait_run(
        self,
        dag_id: str,
        run_id: str | None = None,
        run_type: str | None = None,
        after: str = "",
        timeout: float = 600,
        on_poll: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Until the run (or, without an id, the first run of the DAG of `run_type`) ends;
        `on_poll` is called between checks (to follow the run's progress)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if on_poll is not None:
                on_poll()
            for run in self.runs(dag_id):
                if run_id is not None and run["dag_run_id"] != run_id:
                    continue
                if run_type is not None and run.get("run_type") != run_type:
                    continue
                # ISO timestamps of one server compare as text.
                if after and str(run.get("run_after") or "") < after:
                    continue
                if run["state"] in ("success", "failed"):
                    return run
            time.sleep(2)
        raise TimeoutError(f"{dag_id} run {run_id or '(any)'} did not finish in {timeout} s")
