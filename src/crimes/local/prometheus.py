"""A real Prometheus (Debian's `prometheus` package) for the local runs: the tests and
`crimes demo`. It loads the repository's rule files (monitoring/prometheus/rules, the ones
compose's Prometheus loads) and scrapes the local processes given as targets per job; the job
names are compose's (crimes-gateway, crimes-model-dtc, crimes-model-lda), so the rules' labels
mean the same thing everywhere.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import httpx

from crimes.local.airflow_runner import PROJECT_ROOT

MONITORING_DIR: Final = PROJECT_ROOT / "monitoring" / "prometheus"
RULE_FILES: Final = (
    MONITORING_DIR / "rules" / "recording.yml",
    MONITORING_DIR / "rules" / "alerts.yml",
)
GATEWAY_JOB: Final = "crimes-gateway"


def model_job(kind: str) -> str:
    return f"crimes-model-{kind}"


def binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise RuntimeError("prometheus is not installed (make system-deps installs it)")
    return found


def config(targets: Mapping[str, Sequence[str]], interval: str = "15s") -> dict[str, Any]:
    """A Prometheus configuration: `targets` (job -> host:port) scraped every `interval`, the
    rules evaluated as often."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
            for job, addresses in targets.items()
        ],
    }


def write_config(folder: Path, targets: Mapping[str, Sequence[str]], interval: str = "15s") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prometheus.yml"
    # JSON is YAML: no YAML writer needed.
    path.write_text(json.dumps(config(targets, interval), indent=2))
    return path


def argv(config_file: Path, data_dir: Path, port: int) -> list[str]:
    return [
        binary(),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=2d",
    ]


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """The instant vector `promql` evaluates to now (each sample's labels and value)."""
    answer = httpx.get(
        f"{url}/api/v1/query", params={"query": promql}, timeout=10, trust_env=False
    ).json()
    if answer.get("status") != "success":
        raise RuntimeError(f"prometheus rejected {promql!r}: {answer.get('error')}")
    return [
        {"labels": sample["metric"], "value": float(sample["value"][1])}
        for sample in answer["data"]["result"]
    ]


def api(url: str, path: str) -> Any:
    """A Prometheus HTTP API answer's data (`targets`, `rules`, `alerts`, ...)."""
    answer = httpx.get(f"{url}/api/v1/{path}", timeout=10, trust_env=False).json()
    if answer.get("status") != "success":
        raise RuntimeError(f"prometheus /api/v1/{path}: {answer.get('error')}")
    return answer["data"]
