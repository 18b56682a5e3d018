"""Per-model scaling: two DTC replicas behind one gateway address share the load (their own
metrics say so), and killing one under load loses no answer: the gateway retries UNAVAILABLE
on the surviving replica. The containers' health probes are the same commands."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from crimes.gateway.schemas import EXAMPLE
from crimes.local import launch
from crimes.local.launch import LocalProcess
from crimes.settings import TrackingSettings
from tests.support.system import every_replica_ready, listed_models

pytestmark = pytest.mark.e2e


def infer_count(service: LocalProcess) -> float:
    text = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", trust_env=False).text
    return sum(
        float(value)
        for value in re.findall(
            r'^crimes_model_requests_total\{[^}]*method="ModelInfer"[^}]*\} (\S+)',
            text,
            re.MULTILINE,
        )
    )


def probe(*args: str, env: dict[str, str] | None = None) -> int:
    """`crimes probe ...` as a container runs it, with the container's settings in `env`."""
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [launch.CRIMES, "probe", *args], capture_output=True, check=False, env=environment
    ).returncode


def test_two_replicas_share_the_load_and_survive_losing_one(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    replicas = [launch.serve(LocalProcess, "dtc", {}, tmp_path) for _ in range(2)]
    lda = launch.serve(LocalProcess, "lda", {}, tmp_path)
    gateway = None
    try:
        for service in (*replicas, lda):
            service.wait_healthy()
        gateway = launch.serve(
            LocalProcess,
            "gateway",
            {
                "CRIMES_GATEWAY_DTC_ADDRESS": "ipv4:" + ",".join(r.address for r in replicas),
                "CRIMES_GATEWAY_LDA_ADDRESS": f"dns:///{lda.address}",
                "CRIMES_GATEWAY_TRACKING_URI": TrackingSettings().tracking_uri,
                "CRIMES_GATEWAY_DEADLINE_SECONDS": "1.0",
            },
            tmp_path,
        )
        gateway.wait_healthy()
        deadline = time.monotonic() + 60
        while httpx.get(f"{gateway.url}/health/ready", trust_env=False).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # The compose health checks: the standard gRPC probe per model, HTTP for the gateway.
        assert probe("grpc", replicas[0].address, "--service", "dtc_model_prod") == 0
        assert probe("grpc", lda.address, "--service", "lda_model_prod") == 0
        assert probe("http", f"{gateway.url}/health/live") == 0
        # ... as compose runs them: the port and the model from the service's own settings.
        dtc_settings = {
            "CRIMES_MODEL_NAME": "dtc_model_prod",
            "CRIMES_MODEL_PORT": str(replicas[0].port),
        }
        assert probe("model-service", env=dtc_settings) == 0
        other_model = {**dtc_settings, "CRIMES_MODEL_NAME": "lda_model_prod"}
        assert probe("model-service", env=other_model) == 1
        # --live (compose's check): the server is alive, whatever model it serves.
        assert probe("model-service", "--live", env=other_model) == 0
        assert probe("gateway", env={"CRIMES_GATEWAY_PORT": str(gateway.port)}) == 0
        assert probe("model-service", env={"CRIMES_MODEL_PORT": "not a port"}) == 1

        with httpx.Client(base_url=gateway.url, trust_env=False) as http:
            models = listed_models(http, every_replica_ready)
        assert models["dtc"]["ready_replicas"] == 2

        before = [infer_count(r) for r in replicas]
        with httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as client:
            for _ in range(200):
                assert client.post("/predict", json={"features": EXAMPLE}).status_code == 200
        shares = [infer_count(r) - b for r, b in zip(replicas, before, strict=True)]
        assert sum(shares) >= 200
        assert min(shares) >= 0.3 * sum(shares), shares  # round-robin, not one replica

        answers: list[tuple[int, dict[str, Any]]] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as client:
                while not stop.is_set():
                    response = client.post("/predict", json={"features": EXAMPLE})
                    answers.append((response.status_code, response.json()))

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(2)
        replicas[0].stop(signal.SIGKILL)
        time.sleep(4)
        stop.set()
        worker.join(timeout=30)
        assert probe("grpc", replicas[0].address, "--service", "dtc_model_prod") == 1
        assert len(answers) > 50
        assert {status for status, _ in answers} == {200}
        assert all(body["dtc_fbi_code_output"] == "07" for _, body in answers)
    finally:
        if gateway is not None:
            gateway.stop()
        for service in (*replicas, lda):
            service.stop()
