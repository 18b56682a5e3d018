"""Drift monitoring: reads the drift the gateway measures on the records it serves (per served
model version, against its training split) and, when a feature drifted past the threshold,
starts the ETL (whose Asset then starts the training), the reason carried in that run's conf,
when the trigger's rules allow it (crimes.drift.trigger: drift in K windows in a row from M
clients, a cooldown, no ETL or training run queued or running); every check, triggered or
not, is written to the retrain audit log in the lake.
The gateway read is the deployment's (CRIMES_MONITOR_GATEWAY_URL), never one a run's conf names:
a conf that could point the task at any URL would make Airflow fetch it (request forgery).

Thin over `crimes.orchestration.tasks.check_drift` (the verdict is `crimes.drift.verdict`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

from crimes.orchestration.assets import (
    ETL_DAG_ID,
    MONITOR_DAG_ID,
    TAGS,
    active_retrain_runs,
)


@dag(
    dag_id=MONITOR_DAG_ID,
    description="Drift of the served records against training; above the threshold, retrain",
    schedule=timedelta(minutes=30),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=[*TAGS, "monitoring"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "owner": "ml-platform"},
    params={
        "drift_threshold": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            description="PSI above which a retrain starts (default CRIMES_MONITOR_DRIFT_THRESHOLD)",
        ),
    },
)
def monitor_drift() -> None:
    @task
    def check_drift() -> dict[str, Any]:
        from crimes.orchestration import tasks

        context = get_current_context()
        # Deduplicated: a retrain is not started while one is queued or running.
        active = active_retrain_runs(context)
        return tasks.check_drift(context["params"], active, context["run_id"])

    # (A branch, not a short-circuit: Airflow 3.3's ShortCircuitOperator fails when it skips.)
    @task.branch
    def drifted(verdict: dict[str, Any]) -> str | None:
        return "retrain" if verdict["retrain"] else None

    retrain = TriggerDagRunOperator(
        task_id="retrain",
        trigger_dag_id=ETL_DAG_ID,
        conf={
            "reason": "{{ ti.xcom_pull(task_ids='check_drift')['reason'] }}",
            "triggered_by": MONITOR_DAG_ID + " {{ run_id }}",
        },
        # Runs started here are the retraining loop's: one at a time, never waited for.
        skip_when_already_exists=True,
    )
    verdict: Any = check_drift()
    drifted(verdict) >> retrain


monitor_drift()
