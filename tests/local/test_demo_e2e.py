"""`make demo` from this checkout with the local file source and a small trial count: the
printed answer, two DTC replicas ready from the registry, and `make down` leaving nothing."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from crimes.local import prometheus, stack
from crimes.local.portal_double import load_portal_csv
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.e2e

ROWS = 30_000


def _alive(state_dir: Path) -> list[str]:
    """Processes whose command line mentions the demo's state folder or ports."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if str(state_dir) in cmdline or str(state_dir).encode() in environ:
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def test_make_demo_then_make_down(real_data: Path, tmp_path: Path) -> None:
    source = tmp_path / "crimes.csv.gz"
    with gzip.open(source, "wt") as out:
        load_portal_csv(real_data, rows=ROWS).to_csv(out, index=False)
    state = tmp_path / "state"
    # dtc replicas at dtc_port and +2, lda at +1, the challengers at +3 and +4.
    dtc_port = stack.free_port_block(5)
    challenger_port = dtc_port + 3
    env = {
        **os.environ,
        "CRIMES_SOURCE": str(source),
        "CRIMES_TRAIN_TRIALS": "2",
        "CRIMES_TRAIN_CV_FOLDS": "2",
        "CRIMES_STACK_STATE_DIR": str(state),
        "CRIMES_STACK_MLFLOW_PORT": str(stack.free_port()),
        "CRIMES_STACK_AIRFLOW_PORT": str(stack.free_port()),
        "CRIMES_STACK_GATEWAY_PORT": str(stack.free_port()),
        "CRIMES_STACK_DTC_PORT": str(dtc_port),
        "CRIMES_STACK_LDA_PORT": str(dtc_port + 1),
        "CRIMES_STACK_PROMETHEUS_PORT": str(stack.free_port()),
        "CRIMES_STACK_DTC_CHALLENGER_PORT": str(challenger_port),
        "CRIMES_STACK_LDA_CHALLENGER_PORT": str(challenger_port + 1),
    }
    gateway = f"http://127.0.0.1:{env['CRIMES_STACK_GATEWAY_PORT']}"
    try:
        demo = subprocess.run(
            ["make", "demo"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
            timeout=1200, check=False,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        answer = re.search(r"^\s+(\{\"dtc_fbi_code_output\".*\})$", demo.stdout, re.MULTILINE)
        assert answer, demo.stdout
        assert json.loads(answer.group(1)) == {
            "dtc_fbi_code_output": "07",
            "lda_fbi_code_output": "07",
        }
        for url in ("/docs", "MLflow UI", "Airflow UI"):
            assert url in demo.stdout
        # Each Optuna trial was said as it finished, with its score and the best so far.
        trials = re.findall(r"trial (\d)/2: CV F1 \d\.\d+, best \d\.\d+ \(", demo.stdout)
        assert sorted(trials) == ["1", "2"], demo.stdout
        models = httpx.get(f"{gateway}/models", timeout=10, trust_env=False).json()
        assert models["dtc"]["ready_replicas"] == 2
        assert models["lda"]["ready_replicas"] == 1
        replicas = models["dtc"]["replicas"] + models["lda"]["replicas"]
        assert {r["source"] for r in replicas} == {"mlflow"}
        assert len({r["model_version"] for r in models["dtc"]["replicas"]}) == 1
        # The challenger deployments run, waiting for a challenger version (none yet).
        for kind in ("dtc", "lda"):
            assert models[kind]["challenger"]["ready"] is False
            assert f"{kind} challenger: dns:///127.0.0.1:" in demo.stdout
        assert demo.stdout.count("no challenger version yet") == 2
        # The loop on ground truth: the file's latest records replayed with their keys, the
        # table of realized accuracy per served version printed.
        assert "crimes replay: 2,000 records" in demo.stdout, demo.stdout
        table = re.findall(
            r"^\s+(dtc|lda)\s+champion\s+\d+\s+(\d+)\s+(\d+)\s+([01]\.\d+)", demo.stdout, re.M
        )
        assert sorted(kind for kind, *_ in table) == ["dtc", "lda"], demo.stdout
        assert all(int(labelled) >= 2000 for _, _, labelled, _ in table), table
        # Prometheus scrapes the gateway, each of the three model replicas and the challengers.
        monitoring = f"http://127.0.0.1:{env['CRIMES_STACK_PROMETHEUS_PORT']}"
        assert f"Prometheus    {monitoring}" in demo.stdout
        deadline = time.monotonic() + 30
        while True:
            targets = prometheus.api(monitoring, "targets")["activeTargets"]
            jobs = sorted(t["labels"]["job"] for t in targets if t["health"] == "up")
            if len(jobs) == 6 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert jobs == [
            "crimes-gateway",
            "crimes-model-dtc",
            "crimes-model-dtc",
            "crimes-model-dtc-challenger",
            "crimes-model-lda",
            "crimes-model-lda-challenger",
        ]
    finally:
        down = subprocess.run(
            ["make", "down"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
    assert down.returncode == 0, down.stdout + down.stderr
    assert _alive(state) == []
