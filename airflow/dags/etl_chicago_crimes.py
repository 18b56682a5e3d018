"""ETL of Chicago crimes: portal -> data lake (raw, preprocessed, final, data_info) + MLflow run.

A thin DAG over `crimes.orchestration.tasks` (over `crimes.etl.pipeline`); each task is
idempotent (content-addressed outputs), and only the last one makes the new data visible and
emits the Asset the training is scheduled on.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from crimes.etl.settings import PORTAL_URL
from crimes.orchestration.assets import ETL_DAG_ID, TAGS, final_data_asset

FINAL_DATA = final_data_asset()


@dag(
    dag_id=ETL_DAG_ID,
    description="Chicago Data Portal -> data lake (raw, preprocessed, final, data_info) + MLflow",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=[*TAGS, "etl"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=20), "owner": "data-platform"},
    params={
        "year": Param(2024, type="integer", minimum=2001, maximum=2100),
        "source": Param(
            None,
            type=["null", "string"],
            description=f"Socrata API base URL or a local file (default {PORTAL_URL})",
        ),
        # Said by whatever started the run (monitor_drift: the features that drifted).
        "reason": Param(None, type=["null", "string"], description="Why this run started"),
        "triggered_by": Param(None, type=["null", "string"], description="Who started it"),
    },
)
def etl_chicago_crimes() -> None:
    @task
    def extract() -> dict[str, Any]:
        from crimes.orchestration import tasks

        return tasks.extract(get_current_context()["params"])

    @task
    def preprocess(extracted: dict[str, Any]) -> dict[str, Any]:
        from crimes.orchestration import tasks

        return tasks.preprocess(get_current_context()["params"], extracted)

    @task
    def final_set(extracted: dict[str, Any], preprocessed: dict[str, Any]) -> dict[str, Any]:
        from crimes.orchestration import tasks

        return tasks.final_set(get_current_context()["params"], extracted, preprocessed)

    @task(outlets=[FINAL_DATA])
    def publish(
        extracted: dict[str, Any], preprocessed: dict[str, Any], final: dict[str, Any]
    ) -> dict[str, Any]:
        from crimes.orchestration import tasks

        context = get_current_context()
        manifest = tasks.publish(
            context["params"], extracted, preprocessed, final, run_id=context["run_id"]
        )
        context["outlet_events"][FINAL_DATA].extra = {
            "year": manifest["year"],
            "dataset": manifest["dataset"],
            "transformation_version": manifest["transformation_version"],
            "etl_run_id": manifest["etl_run_id"],
        }
        return {k: manifest[k] for k in ("year", "dataset", "etl_run_id", "rows")}

    # XComArgs at parse time, the stages' summaries at run time.
    extracted: Any = extract()
    preprocessed: Any = preprocess(extracted)
    final: Any = final_set(extracted, preprocessed)
    publish(extracted, preprocessed, final)


etl_chicago_crimes()
