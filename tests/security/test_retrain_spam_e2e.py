"""Attack surface: the drift-triggered retrain. Anyone who can send records could push the
gateway's drift window over the threshold (one district, batch after batch) and make
`monitor_drift` start a full ETL and training run every 30 minutes. Now a retrain needs drift
in K windows in a row, each from M distinct clients, no retrain within the cooldown and none
queued or running; every check, triggered or not, is in the audit log with its evidence.
Real processes: the model services, a gateway, Airflow's `monitor_drift` DAG."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from crimes.lake import datasets
from crimes.lake.storage import Lake
from crimes.local.launch import LocalProcess
from crimes.orchestration import retrain_audit
from tests.drift.test_drift_e2e import drift, end_waiting_runs, etl_runs, monitor
from tests.gateway.test_gateway_e2e import records
from tests.security.conftest import own_gateway
from tests.support.stack import YEAR

pytestmark = pytest.mark.e2e

WINDOW = 200
RULES = {
    "CRIMES_MONITOR_DRIFT_CONSECUTIVE_WINDOWS": "2",
    "CRIMES_MONITOR_DRIFT_MIN_CLIENTS": "2",
    "CRIMES_MONITOR_RETRAIN_COOLDOWN_HOURS": "24",
}


def _one_district(test_split: pd.DataFrame) -> list[dict[str, Any]]:
    district = int(test_split["district"].mode()[0])
    one = test_split[test_split["district"] == district]
    return records(pd.concat([one] * (4 * WINDOW // len(one) + 1)).head(4 * WINDOW))


def _send(url: str, source: str, rows: list[dict[str, Any]]) -> None:
    """Records from one client address (the gateway tells clients apart by their address)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=url, transport=transport, timeout=30, trust_env=False) as http:
        response = http.post("/predict/batch", json={"features": rows})
        assert response.status_code == 200, response.text


def test_drift_from_one_client_or_too_soon_starts_no_retrain(
    attacked: dict[str, LocalProcess], airflow_env: dict[str, str], tmp_path: Path
) -> None:
    lake = Lake()
    if lake.exists(retrain_audit.PREFIX):  # other tests' checks: this one reads its own
        lake.fs.rm(lake.url(retrain_audit.PREFIX), recursive=True)
    end_waiting_runs(airflow_env)
    rows = _one_district(datasets.load_final(lake, YEAR).features_test)
    windows = [rows[i * WINDOW : (i + 1) * WINDOW] for i in range(4)]
    window_settings = {
        "CRIMES_GATEWAY_DRIFT_WINDOW_RECORDS": str(WINDOW),
        "CRIMES_GATEWAY_DRIFT_MIN_RECORDS": str(WINDOW // 2),
    }
    with own_gateway(attacked, tmp_path, **window_settings) as gateway:
        with httpx.Client(base_url=gateway.url, timeout=30, trust_env=False) as http:
            deadline = time.monotonic() + 60
            while {s["status"] for s in drift(http).values()} != {"measuring"}:
                assert time.monotonic() < deadline, drift(http)
                time.sleep(0.5)
        before = etl_runs(airflow_env)

        # One client, two whole windows of one district: drift, but never evidence.
        for window in windows[:2]:
            _send(gateway.url, "127.0.0.1", window)
            monitor(airflow_env, gateway.url, **RULES)
        assert etl_runs(airflow_env) == before

        # Two clients: the first window is one of the two a retrain needs; the second starts
        # one; the third is within the cooldown (and the ETL run it started still waits).
        for window in windows[1:]:
            _send(gateway.url, "127.0.0.2", window[: WINDOW // 2])
            _send(gateway.url, "127.0.0.3", window[WINDOW // 2 :])
            monitor(airflow_env, gateway.url, **RULES)

    started = [run for run in etl_runs(airflow_env) if run not in before]
    assert len(started) == 1, started
    audit = retrain_audit.entries(lake)
    assert [entry["action"] for entry in audit] == ["suppressed"] * 3 + ["triggered", "suppressed"]
    assert all("2 distinct clients" in entry["reason"] for entry in audit[:2])
    assert "seen in 1 of the 2 windows" in audit[2]["reason"]
    assert "cooling down" in audit[4]["reason"]
    for entry in audit:
        assert entry["drifted"], entry
        assert entry["drifted"][0]["feature"] == "district", entry
        assert entry["run_id"], entry
    assert [entry["windows"]["dtc"]["sources"] for entry in audit] == [1, 1, 2, 2, 2]
