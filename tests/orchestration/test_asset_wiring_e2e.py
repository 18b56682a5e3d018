"""A real Airflow (api-server, scheduler, dag-processor; metadata in PostgreSQL): triggering
the ETL through the REST API makes its Asset start the training, with no other trigger."""

from __future__ import annotations

from pathlib import Path

import pytest

from crimes.local import airflow_runner, stack
from crimes.local.portal_double import PortalDouble
from crimes.orchestration import assets
from tests.support.stack import YEAR

pytestmark = pytest.mark.e2e


def test_finishing_the_etl_starts_the_training(
    airflow_env: dict[str, str], stack_portal: PortalDouble, tmp_path: Path
) -> None:
    # Small search: this test is about the wiring, the training tests are about the models.
    env = {**airflow_env, "CRIMES_TRAIN_TRIALS": "2", "CRIMES_TRAIN_CV_FOLDS": "2"}
    port = stack.free_port()
    services_env = airflow_runner.start_services(env, tmp_path, port)
    try:
        api = airflow_runner.AirflowApi(f"http://127.0.0.1:{port}")
        for dag_id in (assets.ETL_DAG_ID, assets.TRAINING_DAG_ID):
            api.wait_dag(dag_id)
            api.unpause(dag_id)
        run_id = api.trigger(assets.ETL_DAG_ID, {"source": stack_portal.url, "year": YEAR})
        etl = api.wait_run(assets.ETL_DAG_ID, run_id, timeout=300)
        assert etl["state"] == "success", etl
        training = api.wait_run(assets.TRAINING_DAG_ID, run_type="asset_triggered", timeout=600)
        assert training["state"] == "success", training
        # The health checks compose runs in the Airflow containers.
        for job in ("SchedulerJob", "DagProcessorJob"):
            check = airflow_runner.airflow(
                services_env, "jobs", "check", "--job-type", job, "--local", check=False
            )
            assert check.returncode == 0, check.stdout + check.stderr
    finally:
        stopped = airflow_runner.stop_services(tmp_path)
    assert set(stopped) == {f"airflow-{name}" for name in airflow_runner.SERVICES}
