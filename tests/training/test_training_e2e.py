"""Training end to end: Airflow runs `train_chicago_crimes` on the data the ETL DAG published;
the champions load from the MLflow registry and reproduce their logged metrics exactly."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from crimes import registry
from crimes.lake import datasets
from crimes.lake.storage import Lake
from crimes.registry import Tag, bundles
from crimes.settings import TrackingSettings
from crimes.training import evaluate
from tests.support.stack import TRIALS, YEAR

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client() -> Any:
    import mlflow

    return mlflow.MlflowClient(TrackingSettings().tracking_uri)


@pytest.mark.parametrize("kind", ["dtc", "lda"])
def test_the_champion_reproduces_its_logged_metrics_exactly(
    trained: dict[str, Any], client: Any, kind: str
) -> None:
    import mlflow

    name = registry.MODELS[kind]
    champion = client.get_model_version_by_alias(name, registry.CHAMPION)
    model = mlflow.sklearn.load_model(registry.model_uri(name))
    final = datasets.load_final(Lake(), YEAR)
    predicted = model.predict(final.X_test.to_numpy(dtype=np.float64))
    recomputed = evaluate.scores(final.y_test.astype(str).to_numpy(), predicted)
    run = client.get_run(champion.run_id)
    for metric, value in recomputed.items():
        assert run.data.metrics[metric] == value, metric
    assert champion.tags[Tag.TEST_F1_WEIGHTED] == repr(recomputed["test_f1_weighted"])
    assert recomputed["test_accuracy"] >= 0.99


@pytest.mark.parametrize("kind", ["dtc", "lda"])
def test_versions_carry_their_lineage(trained: dict[str, Any], client: Any, kind: str) -> None:
    name = registry.MODELS[kind]
    champion = client.get_model_version_by_alias(name, registry.CHAMPION)
    tags = champion.tags
    assert tags[Tag.TRANSFORMATION_VERSION] == trained["transformation_version"]
    assert tags[Tag.ETL_RUN_ID] == trained["etl_run_id"]
    assert tags[Tag.DATASET] == trained["dataset"]
    assert tags[Tag.DATA_SNAPSHOT] == trained["snapshot"]
    assert json.loads(tags[Tag.HYPERPARAMETERS])
    run = client.get_run(champion.run_id)
    assert run.data.tags["promotion.decision"] == "champion"
    assert run.data.tags["airflow_run_id"]
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "Chicago Crimes 2024"
    artifacts = {a.path for a in client.list_artifacts(champion.run_id, "evaluation")}
    assert {
        "evaluation/confusion_matrix.png",
        "evaluation/classification_report.json",
        "evaluation/classification_report.txt",
    } <= artifacts
    assert [a.path for a in client.list_artifacts(champion.run_id, "transformation")] == [
        "transformation/transformation.json",
        "transformation/version.json",
    ]


def test_every_optuna_trial_is_a_nested_run(trained: dict[str, Any], client: Any) -> None:
    champion = client.get_model_version_by_alias(registry.MODELS["dtc"], registry.CHAMPION)
    run = client.get_run(champion.run_id)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert len(children) == TRIALS
    assert all("cv_f1_weighted" in child.data.metrics for child in children)
    best = max(child.data.metrics["cv_f1_weighted"] for child in children)
    assert run.data.metrics["cv_f1_weighted"] == best


@pytest.mark.parametrize("kind", ["dtc", "lda"])
def test_the_fallback_bundle_is_the_champion(
    trained: dict[str, Any], client: Any, kind: str
) -> None:
    name = registry.MODELS[kind]
    champion = client.get_model_version_by_alias(name, registry.CHAMPION)
    bundle = bundles.read_bundle(Lake(), name)
    assert bundle.version == str(champion.version)
    assert bundle.transformation_version == trained["transformation_version"]
    final = datasets.load_final(Lake(), YEAR)
    sample = final.X_test.head(500).to_numpy(dtype=np.float64)
    import mlflow

    registered = mlflow.sklearn.load_model(f"models:/{name}/{champion.version}")
    assert (bundle.model.predict(sample) == registered.predict(sample)).all()


def test_training_again_on_the_same_dataset_registers_no_duplicate(
    trained: dict[str, Any], client: Any
) -> None:
    from crimes.training import pipeline as training
    from crimes.training.settings import TrainingSettings

    def versions(name: str) -> int:
        return len(client.search_model_versions(f"name = '{name}'"))

    before = {name: versions(name) for name in registry.MODELS.values()}
    summaries = training.run_training(
        TrainingSettings(year=YEAR, trials=1, cv_folds=2), dataset=trained["dataset"]
    )
    for summary in summaries:
        assert summary.reason.startswith(f"already trained on dataset {trained['dataset']}")
        tagged = client.get_model_version(summary.name, summary.version).tags
        assert tagged[Tag.DATASET] == trained["dataset"]
    assert {name: versions(name) for name in registry.MODELS.values()} == before
