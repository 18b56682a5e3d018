"""The DAG files import cleanly and declare what the platform relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crimes.local import airflow_runner
from crimes.orchestration import assets


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("airflow_home")
    env = airflow_runner.environment(home, f"sqlite:///{home / 'airflow.db'}")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            if name.startswith("AIRFLOW"):
                patch.setenv(name, value)
        from airflow.dag_processing.dagbag import DagBag

        yield DagBag(dag_folder=str(airflow_runner.DAGS_FOLDER))


def test_no_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert assets.ETL_DAG_ID in dagbag.dags


def test_every_dag_has_tags_and_retries(dagbag: Any) -> None:
    for dag in dagbag.dags.values():
        assert "chicago-crimes" in dag.tags, dag.dag_id
        for task in dag.tasks:
            assert task.retries >= 1, (dag.dag_id, task.task_id)


def test_etl_publishes_the_final_data_asset_from_its_last_task(dagbag: Any) -> None:
    dag = dagbag.dags[assets.ETL_DAG_ID]
    producers = [t for t in dag.tasks if t.outlets]
    assert [t.task_id for t in producers] == ["publish"]
    (asset,) = producers[0].outlets
    assert asset.name == assets.FINAL_DATA_ASSET
    assert producers[0].downstream_task_ids == set()
    assert {t.task_id for t in dag.tasks} == {
        "extract",
        "preprocess",
        "final_set",
        "publish",
    }
    assert dag.params["year"] == 2024


def test_dag_files_keep_heavy_imports_inside_tasks() -> None:
    heavy = ("sklearn", "pandas", "mlflow", "numpy")
    for path in Path(airflow_runner.DAGS_FOLDER).glob("*.py"):
        top_level = [
            line for line in path.read_text().splitlines() if line.startswith(("import", "from"))
        ]
        assert not [line for line in top_level if any(h in line for h in heavy)], path


def test_training_is_scheduled_on_the_etl_asset(dagbag: Any) -> None:
    from airflow.sdk.definitions.asset import AssetAll
    from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable

    etl = dagbag.dags[assets.ETL_DAG_ID]
    training = dagbag.dags[assets.TRAINING_DAG_ID]
    assert isinstance(training.timetable, AssetTriggeredTimetable)
    (produced,) = next(t for t in etl.tasks if t.outlets).outlets
    condition = training.timetable.asset_condition
    assert isinstance(condition, AssetAll)
    assert list(condition.objects) == [produced]
    assert {t.task_id for t in training.tasks} == {"train_dtc", "train_lda"}
    assert set(training.params) == {"trials", "cv_folds", "year", "dataset", "reason"}
    assert training.max_active_runs == 1


def test_the_year_comes_from_the_param_or_the_triggering_event() -> None:
    class Event:
        def __init__(self, extra: dict[str, Any]) -> None:
            self.extra = extra

    def context(year: int | None, events: list[Event]) -> dict[str, Any]:
        return {"params": {"year": year}, "triggering_asset_events": {"asset": events}}

    assert assets.triggering_year(context(2023, []), 2024) == 2023
    assert assets.triggering_year(context(None, [Event({"year": 2022})]), 2024) == 2022
    assert assets.triggering_year(context(None, []), 2024) == 2024


def test_training_is_pinned_to_the_dataset_the_etl_event_names() -> None:
    class Event:
        def __init__(self, extra: dict[str, Any]) -> None:
            self.extra = extra

    events = [Event({"dataset": "ds-old"}), Event({"year": 2024}), Event({"dataset": "ds-new"})]
    assert assets.triggering_dataset({"triggering_asset_events": {"a": events}}) == "ds-new"
    assert assets.triggering_dataset({"triggering_asset_events": {}}) is None
    assert assets.triggering_dataset({}) is None


def test_monitor_drift_is_scheduled_and_starts_the_etl_only_when_drifted(dagbag: Any) -> None:
    dag = dagbag.dags[assets.MONITOR_DAG_ID]
    assert type(dag.timetable).__name__ == "DeltaTriggerTimetable"  # every 30 minutes
    assert dag.max_active_runs == 1
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {"check_drift", "drifted", "retrain"}
    assert tasks["retrain"].trigger_dag_id == assets.ETL_DAG_ID
    assert tasks["retrain"].upstream_task_ids == {"drifted"}
    assert tasks["drifted"].upstream_task_ids == {"check_drift"}
    assert "reason" in tasks["retrain"].conf
    # The ETL takes the reason as a param of its own.
    assert {"reason", "triggered_by"} <= set(dagbag.dags[assets.ETL_DAG_ID].params)


def test_the_monitor_dag_takes_no_url_from_a_runs_conf(dagbag: Any) -> None:
    """Its params are what a run's conf may set: the threshold, never the gateway's URL
    (tests/security/test_orchestration_params.py: the task reads only the configured one)."""
    params = dagbag.dags[assets.MONITOR_DAG_ID].params
    assert "gateway_url" not in params
    assert "drift_threshold" in params


def test_the_evaluation_runs_on_each_etl_and_starts_training_only_when_accuracy_is_low(
    dagbag: Any,
) -> None:
    from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable

    etl = dagbag.dags[assets.ETL_DAG_ID]
    dag = dagbag.dags[assets.EVALUATION_DAG_ID]
    assert isinstance(dag.timetable, AssetTriggeredTimetable)
    (produced,) = next(t for t in etl.tasks if t.outlets).outlets
    condition: Any = dag.timetable.asset_condition
    assert list(condition.objects) == [produced]
    assert dag.max_active_runs == 1
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {"evaluate", "accuracy_low", "retrain"}
    assert tasks["retrain"].trigger_dag_id == assets.TRAINING_DAG_ID
    assert tasks["retrain"].upstream_task_ids == {"accuracy_low"}
    assert "reason" in tasks["retrain"].conf
    assert set(dag.params) == {"lookback_days"}
