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
from crimes.registry.onnx_form import OnnxClassifier
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
    served = OnnxClassifier(bundle.model, "the lake's bundle").predict(sample, False).labels
    assert (served == registered.predict(sample)).all()
    # Its ONNX form was checked on every test row and the reference example.
    tags = champion.tags
    assert tags[Tag.ONNX_ROWS_COMPARED] == str(len(final.X_test) + 1)
    assert tags[Tag.ONNX_MODEL].startswith("models:/m-")
    assert len(tags[Tag.ONNX_SHA256]) == 64


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


def test_add_onnx_gives_an_older_version_its_form_once(
    trained: dict[str, Any], client: Any
) -> None:
    """A version registered as before the services ran ONNX (the champion's classifier, its
    lineage, no form) gets one from `crimes add-onnx`, checked on its whole test split; a second
    run leaves it alone; a version that does not exist or is no number is one line, not zero."""
    import subprocess
    import sys
    from pathlib import Path

    import mlflow

    from crimes.registry import artifacts

    champion = client.get_model_version_by_alias(registry.MODELS["lda"], registry.CHAMPION)
    model = mlflow.sklearn.load_model(registry.model_uri(registry.MODELS["lda"]))
    # A model of its own: the served ones' versions stay the training's.
    name = "lda_before_onnx"
    mlflow.set_tracking_uri(TrackingSettings().tracking_uri)
    with mlflow.start_run(run_id=champion.run_id):
        info = mlflow.sklearn.log_model(
            model,
            name="model-before-onnx",
            registered_model_name=name,
            serialization_format="skops",
        )
    old = str(info.registered_model_version)
    artifacts.record_model_sha256(mlflow.get_tracking_uri(), name, old)
    for key in (Tag.TRANSFORMATION_VERSION, Tag.DATASET, Tag.YEAR):
        client.set_model_version_tag(name, old, key, champion.tags[key])
    assert Tag.ONNX_MODEL not in client.get_model_version(name, old).tags

    crimes = str(Path(sys.executable).parent / "crimes")

    def add_onnx(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [crimes, "add-onnx", *arguments], capture_output=True, text=True, timeout=300
        )

    done = add_onnx(name, old)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = len(datasets.load_final(Lake(), YEAR).X_test) + 1
    assert f"labels equal on {rows} rows" in done.stdout
    tags = client.get_model_version(name, old).tags
    assert tags[Tag.ONNX_ROWS_COMPARED] == str(rows)
    form = artifacts.version_tags(mlflow.get_tracking_uri(), name, old)[Tag.ONNX_MODEL]
    again = add_onnx(name, old)
    assert again.returncode == 0
    assert f"already has its ONNX form: {form}" in again.stdout
    for arguments, code in (((name, "99999"), 1), (("lda", "two"), 2)):
        refused = add_onnx(*arguments)
        assert refused.returncode == code
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert refused.stderr.startswith("crimes add-onnx: ")
