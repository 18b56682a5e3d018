"""Drift end to end, on real rows and real processes: versions trained by the training DAG
(each logged with its reference), both model services and the gateway measuring the records it
serves. The 2024 test split replayed keeps every PSI below 0.1 and starts no retrain; a replay
of one district only pushes `district` above 0.2 within one window, in `/drift`, `/models`,
Prometheus' metric and `crimes drift`, and the `monitor_drift` DAG then starts the ETL with the
reason on its run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crimes import contract
from crimes.lake import datasets
from crimes.lake.storage import Lake
from crimes.local import airflow_runner
from crimes.local.launch import LocalProcess
from crimes.orchestration import assets
from tests.gateway.test_gateway_e2e import records
from tests.support.stack import YEAR
from tests.support.system import gateway_metrics, serving_system

pytestmark = pytest.mark.e2e

WINDOW = 2000
CRIMES = str(Path(sys.executable).parent / "crimes")


@pytest.fixture(scope="module")
def test_split(trained: dict[str, Any]) -> pd.DataFrame:
    return datasets.load_final(Lake(), YEAR).features_test


@pytest.fixture(scope="module")
def gateway(
    trained: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalProcess]:
    settings = {
        "CRIMES_GATEWAY_DRIFT_WINDOW_RECORDS": str(WINDOW),
        "CRIMES_GATEWAY_DRIFT_MIN_RECORDS": str(WINDOW // 2),
        "CRIMES_GATEWAY_MAX_BATCH_RECORDS": "500",
    }
    with serving_system(tmp_path_factory.mktemp("drift"), gateway=settings) as started:
        yield started["gateway"]


def drift(http: httpx.Client) -> dict[str, Any]:
    report: dict[str, Any] = http.get("/drift").json()
    return report


def replay(http: httpx.Client, rows: list[dict[str, Any]]) -> None:
    """A tenth one by one, the rest in batches: both ways into the window."""
    singles = len(rows) // 10
    for record in rows[:singles]:
        assert http.post("/predict", json={"features": record}).status_code == 200
    for start in range(singles, len(rows), 500):
        response = http.post("/predict/batch", json={"features": rows[start : start + 500]})
        assert response.status_code == 200, response.text


def psi_by_feature(report: dict[str, Any], kind: str) -> dict[str, float]:
    return {f["feature"]: f["psi"] for f in report[kind]["window"]["features"]}


def metric_psi(gateway: LocalProcess) -> dict[tuple[str, str], float]:
    found = {}
    for family in text_string_to_metric_families(gateway_metrics(gateway)):
        if family.name == "crimes_model_feature_psi":
            for sample in family.samples:
                found[(sample.labels["model"], sample.labels["feature"])] = sample.value
    return found


def crimes_drift(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRIMES, "drift", "--gateway", url], capture_output=True, text=True, timeout=60
    )


def etl_runs(env: dict[str, str]) -> list[dict[str, Any]]:
    listed = airflow_runner.airflow(env, "dags", "list-runs", assets.ETL_DAG_ID, "-o", "json")
    # (Airflow may print warnings first: the JSON is its last line.)
    lines = [line for line in listed.stdout.splitlines() if line.startswith("[")]
    runs: list[dict[str, Any]] = json.loads(lines[-1])
    return runs


# The trigger's rules off (one window, one client, no cooldown): this test is the drift loop
# itself; tests/security/test_retrain_spam_e2e.py holds the rules.
EVERY_DRIFT_RETRAINS = {
    "CRIMES_MONITOR_DRIFT_CONSECUTIVE_WINDOWS": "1",
    "CRIMES_MONITOR_DRIFT_MIN_CLIENTS": "1",
    "CRIMES_MONITOR_RETRAIN_COOLDOWN_HOURS": "0",
}


def monitor(env: dict[str, str], url: str, **settings: str) -> None:
    # The deployment's gateway (its setting): a run's conf cannot name one.
    result = airflow_runner.dags_test(
        {**env, "CRIMES_MONITOR_GATEWAY_URL": url, **(settings or EVERY_DRIFT_RETRAINS)},
        assets.MONITOR_DAG_ID,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def end_waiting_runs(env: dict[str, str]) -> None:
    """Runs `dags test` queued (no scheduler here runs them) marked failed: a retrain waits
    for none of them."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    try:
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text(
                    "update dag_run set state = 'failed' where state in ('queued', 'running')"
                )
            )
    finally:
        engine.dispose()


def test_served_test_rows_stay_calm_and_one_district_drifts(
    gateway: LocalProcess, test_split: pd.DataFrame, airflow_env: dict[str, str]
) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30, trust_env=False) as http:
        deadline = time.monotonic() + 60
        while {s["status"] for s in drift(http).values()} != {"measuring"} or len(drift(http)) != 2:
            assert time.monotonic() < deadline, drift(http)
            time.sleep(0.5)
        report = drift(http)
        # Both versions trained on one dataset: one reference, one window.
        assert report["dtc"]["window"]["reference"] == report["lda"]["window"]["reference"]

        # The test split, as it is: every feature's PSI below 0.1.
        replay(http, records(test_split.sample(n=WINDOW, random_state=7)))
        calm = drift(http)
        for kind in ("dtc", "lda"):
            assert calm[kind]["window"]["records"] == WINDOW
            found = psi_by_feature(calm, kind)
            assert set(found) == set(contract.FEATURES)
            assert max(found.values()) < 0.1, found
        print("calm: worst", max(found, key=found.__getitem__), f"{max(found.values()):.4f}")
        judged = len(contract.FEATURES) - len(contract.CALENDAR_FEATURES)
        assert len(metric_psi(gateway)) == 2 * judged
        said = crimes_drift(gateway.url)
        assert said.returncode == 0, said.stderr
        assert "district" in said.stdout
        assert "every feature below PSI 0.2" in said.stdout
        before = etl_runs(airflow_env)
        monitor(airflow_env, gateway.url)
        assert len(etl_runs(airflow_env)) == len(before)  # no drift: no retrain

        # One district only, a window's worth: `district` far above 0.2.
        district = int(test_split["district"].mode()[0])
        one = test_split[test_split["district"] == district]
        shifted = records(pd.concat([one] * (WINDOW // len(one) + 1)).head(WINDOW))
        replay(http, shifted)
        drifted = drift(http)
        for kind in ("dtc", "lda"):
            assert psi_by_feature(drifted, kind)["district"] > 0.2
        print(f"district {district} only: PSI {psi_by_feature(drifted, 'dtc')['district']:.3f}")
        assert metric_psi(gateway)[("dtc", "district")] > 0.2
        worst = http.get("/models").json()["dtc"]["drift"]["worst"]
        assert "district" in {w["feature"] for w in worst}
        said = crimes_drift(gateway.url)
        assert said.returncode == 3, said.stderr
        assert "DRIFTED" in said.stdout

    end_waiting_runs(airflow_env)
    before = etl_runs(airflow_env)
    monitor(airflow_env, gateway.url)
    (started,) = [run for run in etl_runs(airflow_env) if run not in before]
    conf = run_conf(airflow_env, started["run_id"])
    assert "district" in conf["reason"], conf
    assert conf["triggered_by"].startswith(assets.MONITOR_DAG_ID)
    print(f"monitor_drift started {started['run_id']}: {conf['reason']}")


def run_conf(env: dict[str, str], run_id: str) -> dict[str, Any]:
    """A DAG run's conf, read from Airflow's metadata database (the CLI does not list it)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    try:
        with engine.connect() as connection:
            query = "select conf from dag_run where dag_id = :dag and run_id = :run"
            found = connection.execute(
                sqlalchemy.text(query), {"dag": assets.ETL_DAG_ID, "run": run_id}
            ).scalar_one()
    finally:
        engine.dispose()
    conf: dict[str, Any] = json.loads(found) if isinstance(found, (str, bytes)) else found
    return conf
