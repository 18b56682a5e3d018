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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from crimes.logs import get_logger

log = get_logger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
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
