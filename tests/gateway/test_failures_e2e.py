"""Partial failure under load: a model service killed (SIGKILL) mid-traffic costs only its own
answers, never a 5xx or a hang; when it comes back, full answers return within seconds."""

from __future__ import annotations

import signal
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

pytestmark = pytest.mark.e2e

DEADLINE = 1.0


def test_a_killed_model_service_costs_only_its_answers(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    dtc = launch.serve(LocalProcess, "dtc", {}, tmp_path)
    lda = launch.serve(LocalProcess, "lda", {}, tmp_path)
    gateway = None
    try:
        dtc.wait_healthy()
        lda.wait_healthy()
        gateway = launch.serve(
            LocalProcess,
            "gateway",
            {
                "CRIMES_GATEWAY_DTC_ADDRESS": f"dns:///{dtc.address}",
                "CRIMES_GATEWAY_LDA_ADDRESS": f"dns:///{lda.address}",
                "CRIMES_GATEWAY_TRACKING_URI": TrackingSettings().tracking_uri,
                "CRIMES_GATEWAY_DEADLINE_SECONDS": str(DEADLINE),
            },
            tmp_path,
        )
        gateway.wait_healthy()
        ready = f"{gateway.url}/health/ready"
        deadline = time.monotonic() + 60
        while httpx.get(ready, trust_env=False).status_code != 200:
            assert time.monotonic() < deadline, "the gateway never became ready"
            time.sleep(0.2)
        log: list[tuple[float, int, dict[str, Any], float, str]] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    response = client.post("/predict", json={"features": EXAMPLE})
                    elapsed = time.monotonic() - started
                    body = response.json()
                    partial = response.headers.get("X-Partial-Failure", "")
                    log.append((started, response.status_code, body, elapsed, partial))

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(3)
        killed_at = time.monotonic()
        lda.stop(signal.SIGKILL)
        time.sleep(4)
        lda = launch.serve(LocalProcess, "lda", {}, tmp_path, port=lda.port)
        lda.wait_healthy()
        back_at = time.monotonic()
        time.sleep(6)
        stop.set()
        worker.join(timeout=30)

        assert log, "no request was made"
        assert all(status == 200 for _, status, _, _, _ in log), [
            (round(t - killed_at, 2), status, body)
            for t, status, body, _, _ in log
            if status != 200
        ]
        # Nobody waits much past the deadline (a margin for a loaded 2-core machine).
        assert max(elapsed for _, _, _, elapsed, _ in log) < DEADLINE + 1.5
        during = [entry for entry in log if killed_at + 0.5 < entry[0] < back_at]
        assert during, "no request during the outage"
        assert all(body["dtc_fbi_code_output"] == "07" for _, _, body, _, _ in during)
        degraded = [entry for entry in during if entry[2]["lda_fbi_code_output"] is None]
        assert degraded, "the outage was never visible"
        assert all("lda=" in partial for _, _, _, _, partial in degraded)
        # Full answers again within a few seconds of the restart.
        late = [entry for entry in log if entry[0] > back_at + 3]
        assert late
        assert all(body == {"dtc_fbi_code_output": "07", "lda_fbi_code_output": "07"}
                   for _, _, body, _, _ in late)  # fmt: skip

        # Both down: 503 with a JSON error naming each failure, within the deadline.
        dtc.stop(signal.SIGKILL)
        lda.stop(signal.SIGKILL)
        started = time.monotonic()
        response = httpx.post(
            f"{gateway.url}/predict", json={"features": EXAMPLE}, timeout=10, trust_env=False
        )
        assert time.monotonic() - started < DEADLINE + 1.5
        assert response.status_code == 503
        failures = response.json()["detail"]["failures"]
        assert set(failures) == {"dtc", "lda"}
        assert all(f["status"] in ("unavailable", "timeout") for f in failures.values())
    finally:
        for service in (gateway, dtc, lda):
            if service is not None:
                service.stop()
