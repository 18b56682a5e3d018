"""(Re)training of both models, scheduled on the ETL's published data set.

Every ETL run that publishes data emits the Asset this DAG is scheduled on, so it trains on
the new data; it can also be triggered by hand with `trials` and `cv_folds`. Each task trains,
evaluates, registers and promotes one model (a thin call into `crimes.orchestration.tasks`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from crimes.orchestration.assets import TAGS, TRAINING_DAG_ID, final_data_asset

FINAL_DATA = final_data_asset()


def _train(kind: str) -> dict[str, Any]:
    from crimes.orchestration import tasks

    return tasks.train(kind, get_current_context())


@dag(
    dag_id=TRAINING_DAG_ID,
    description="Train, evaluate, register and promote the DTC (Optuna) and LDA models",
    schedule=[FINAL_DATA],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=[*TAGS, "training"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30), "owner": "ml-platform"},
    params={
        "trials": Param(None, type=["null", "integer"], minimum=1, maximum=500),
        "cv_folds": Param(None, type=["null", "integer"], minimum=2, maximum=10),
        "year": Param(None, type=["null", "integer"], minimum=2001, maximum=2100),
        "dataset": Param(
            None,
            type=["null", "string"],
            description="A published dataset id (ds-...); default: the triggering ETL's",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            description="Why the run started, when a monitor started it (kept on the run)",
        ),
    },
)
def train_chicago_crimes() -> None:
    @task
    def train_dtc() -> dict[str, Any]:
        return _train("dtc")

    @task
    def train_lda() -> dict[str, Any]:
        return _train("lda")

    train_dtc()
    train_lda()


train_chicago_crimes()
