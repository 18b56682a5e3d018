"""Ground truth: each time the ETL publishes (new labelled records arrived), the served
predictions are joined with the labels, the realized accuracy per served version goes to the
lake, the registry and (through the exporter) Prometheus; when a champion's realized accuracy
stayed below the threshold on K judged days in a row, the training starts, within the
trigger's rules (crimes.feedback.trigger: a cooldown, no ETL or training run queued or running).

Thin over `crimes.orchestration.tasks.evaluate_served` (the same function `crimes evaluate` runs).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

from crimes.orchestration.assets import (
    EVALUATION_DAG_ID,
    TAGS,
    TRAINING_DAG_ID,
    active_retrain_runs,
    final_data_asset,
)

FINAL_DATA = final_data_asset()


@dag(
    dag_id=EVALUATION_DAG_ID,
    description="Join served predictions with published labels: realized accuracy per version",
    schedule=[FINAL_DATA],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=[*TAGS, "monitoring"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1), "owner": "ml-platform"},
    params={
        "lookback_days": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=3660,
            description="Days of served predictions (default CRIMES_EVALUATION_LOOKBACK_DAYS)",
        ),
    },
)
def evaluate_served_predictions() -> None:
    @task
    def evaluate() -> dict[str, Any]:
        from crimes.orchestration import tasks

        context = get_current_context()
        active = active_retrain_runs(context)
        return tasks.evaluate_served(context["params"], active, context["run_id"])

    @task.branch
    def accuracy_low(summary: dict[str, Any]) -> str | None:
        return "retrain" if summary["retrain"] else None

    retrain = TriggerDagRunOperator(
        task_id="retrain",
        trigger_dag_id=TRAINING_DAG_ID,
        conf={"reason": "{{ ti.xcom_pull(task_ids='evaluate')['reason'] }}"},
        skip_when_already_exists=True,
    )
    summary: Any = evaluate()
    accuracy_low(summary) >> retrain


evaluate_served_predictions()
