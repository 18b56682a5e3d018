"""Train one model end to end, step by step: fit (the Optuna search, or LDA), evaluate and log,
register and tag, promote, and publish the champion's fallback bundle. `crimes train` and the
Airflow DAG both call `train`; each step takes and gives typed values."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from crimes import registry
from crimes.drift import reference as drift_reference
from crimes.feedback.calibration import Calibration
from crimes.lake import datasets, layout
from crimes.lake.datasets import FinalData
from crimes.lake.storage import Lake
from crimes.ops.logs import get_logger
from crimes.registry import Tag, artifacts, bundles, model_files, tracking
from crimes.settings import TrackingSettings, tracking_settings
from crimes.training import comparison, models, onnx_export, promotion
from crimes.training import evaluate as evaluation
from crimes.training.evaluate import Evaluation
from crimes.training.models import Fitted
from crimes.training.promotion import Decision
from crimes.training.settings import TrainingSettings

log = get_logger(__name__)

KINDS = tuple(registry.MODELS)


@dataclass(frozen=True)
class Splits:
    """The published train and test splits as the models take them."""

    x_train: npt.NDArray[np.float64]
    y_train: npt.NDArray[Any]
    x_test: npt.NDArray[np.float64]
    y_test: npt.NDArray[Any]

    @classmethod
    def of(cls, final: FinalData) -> Splits:
        return cls(
            x_train=final.X_train.to_numpy(dtype=np.float64),
            y_train=final.y_train.astype(str).to_numpy(),
            x_test=final.X_test.to_numpy(dtype=np.float64),
            y_test=final.y_test.astype(str).to_numpy(),
        )


@dataclass(frozen=True)
class Lineage:
    """What a model version was made from: tagged on its run and on the version."""

    transformation_version: str
    etl_run_id: str
    year: int
    dataset: str
    data_snapshot: str
    synthetic: bool

    @classmethod
    def of(cls, final: FinalData) -> Lineage:
        manifest = final.manifest
        return cls(
            transformation_version=final.transformation_version,
            etl_run_id=str(manifest["etl_run_id"]),
            year=int(manifest["year"]),
            dataset=str(manifest["dataset"]),
            data_snapshot=str(manifest["snapshot"]),
            synthetic=bool(manifest.get("synthetic", False)),
        )

    def tags(self) -> dict[str, str]:
        return {
            Tag.TRANSFORMATION_VERSION: self.transformation_version,
            Tag.ETL_RUN_ID: self.etl_run_id,
            Tag.YEAR: str(self.year),
            Tag.DATASET: self.dataset,
            Tag.DATA_SNAPSHOT: self.data_snapshot,
            Tag.SYNTHETIC: str(self.synthetic).lower(),
        }


@dataclass(frozen=True)
class TrainingSummary:
    """What one model's training did (what `crimes train` prints and the DAG task returns)."""

    model: str
    name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    hyperparameters: dict[str, Any]
    promoted: bool
    reason: str
    champion_before: str | None
    bundle: str | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pip_requirements() -> list[str]:
    """Pinned explicitly: inferring them makes MLflow import and probe the world (~10 s)."""
    from importlib.metadata import version

    return [
        f"{package}=={version(package)}"
        for package in ("scikit-learn", "numpy", "scipy", "pandas", "skops", "mlflow-skinny")
    ]


def train(
    kind: str,
    final: FinalData,
    settings: TrainingSettings,
    lake: Lake,
    tracking_config: TrackingSettings | None = None,
    orchestrator_run: str | None = None,
    report: Callable[[str], None] | None = None,
) -> TrainingSummary:
    """`report`, when given, hears each finished Optuna trial as a line of text."""
    import mlflow

    if kind not in registry.MODELS:
        raise ValueError(f"unknown model {kind!r}: expected one of {', '.join(KINDS)}")
    name = registry.MODELS[kind]
    config = tracking_config or tracking_settings()
    client = mlflow.MlflowClient(config.tracking_uri)
    splits, lineage = Splits.of(final), Lineage.of(final)
    existing = trained_before(client, name, lineage.dataset)
    if existing is not None:
        said = {k: v for k, v in existing.as_dict().items() if k != "hyperparameters"}
        log.info("training.already_done", dataset=lineage.dataset, **said)
        return existing
    run_tags = {"stage": "training", "model": kind, **lineage.tags()}
    if orchestrator_run:
        run_tags["airflow_run_id"] = orchestrator_run
    started = time.perf_counter()
    with tracking.run(f"{kind}-{lineage.dataset}", run_tags, config) as run:
        _log_inputs(kind, name, splits, settings)
        fitted = fit(kind, splits, settings, client, config, name, lineage, report)
        result, metrics = evaluate_and_log(name, fitted, splits, started)
        version, exported = register(fitted, final, name)
        tag_version(client, name, version, lineage, fitted, result)
        if lineage.synthetic and not settings.allow_synthetic_champion:
            decision = synthetic_stays_challenger(client, name, version, result)
        else:
            decision = decide_promotion(
                client, name, version, fitted, final, result, lake, settings
            )
        bundle = (
            publish_bundle(
                lake, name, version, run.info.run_id, fitted, exported, final, result, lineage
            )
            if decision.promoted
            else None
        )
    summary = TrainingSummary(
        model=kind,
        name=name,
        version=version,
        run_id=run.info.run_id,
        metrics=metrics,
        hyperparameters=fitted.params,
        promoted=decision.promoted,
        reason=decision.reason,
        champion_before=decision.champion_version,
        bundle=bundle,
        seconds=round(time.perf_counter() - started, 2),
    )
    log.info(
        "training.done",
        **{k: v for k, v in summary.as_dict().items() if k != "hyperparameters"},
    )
    return summary


def trained_before(client: Any, name: str, dataset: str) -> TrainingSummary | None:
    """The version already trained on this dataset, if any: a rerun of the task (a retry, the
    same ETL output published again) registers no duplicate."""
    found = client.search_model_versions(f"name = '{name}' and tags.{Tag.DATASET} = '{dataset}'")
    if not found:
        return None
    version = min(found, key=lambda v: int(v.version))
    tags = version.tags or {}
    return TrainingSummary(
        model=next(kind for kind, model in registry.MODELS.items() if model == name),
        name=name,
        version=str(version.version),
        run_id=str(version.run_id or ""),
        metrics={k: float(v) for k, v in tags.items() if k.startswith("test_")},
        hyperparameters=json.loads(tags.get(Tag.HYPERPARAMETERS, "{}")),
        promoted=tags.get("promotion.decision") == registry.CHAMPION,
        reason=f"already trained on dataset {dataset}: version {version.version}",
        champion_before=tags.get("promotion.champion_version") or None,
        bundle=None,
        seconds=0.0,
    )


def _log_inputs(kind: str, name: str, splits: Splits, settings: TrainingSettings) -> None:
    import mlflow

    mlflow.log_params(
        {
            "model": kind,
            "registered_model": name,
            "rows_train": len(splits.y_train),
            "rows_test": len(splits.y_test),
            "n_features": splits.x_train.shape[1],
            "seed": settings.seed,
        }
    )


def fit(
    kind: str,
    splits: Splits,
    settings: TrainingSettings,
    client: Any,
    config: TrackingSettings,
    name: str,
    lineage: Lineage,
    report: Callable[[str], None] | None = None,
) -> Fitted:
    """The DTC's Optuna search (every trial a nested run), or the LDA fit."""
    import mlflow

    if kind == "dtc":
        from optuna_integration.mlflow import MLflowCallback

        mlflow.log_params({"trials": settings.trials, "cv_folds": settings.cv_folds})
        callback = MLflowCallback(
            tracking_uri=config.tracking_uri,
            metric_name="cv_f1_weighted",
            create_experiment=False,
            mlflow_kwargs={"nested": True},
        )
        fitted = models.search_dtc(
            splits.x_train,
            splits.y_train,
            settings,
            callbacks=[callback],
            first_guess=_champion_hyperparameters(client, name, lineage.transformation_version),
            report=report,
        )
    else:
        fitted = models.fit_lda(splits.x_train, splits.y_train, settings)
    mlflow.log_params({f"hp.{k}": v for k, v in fitted.params.items()})
    return fitted


def evaluate_and_log(
    name: str, fitted: Fitted, splits: Splits, started: float
) -> tuple[Evaluation, dict[str, float]]:
    """The test-set evaluation, logged on the run: metrics, report, confusion matrix."""
    import mlflow

    result = evaluation.evaluate(fitted.model, splits.x_test, splits.y_test)
    metrics = dict(result.metrics)
    if fitted.cv_f1_weighted is not None:
        metrics["cv_f1_weighted"] = fitted.cv_f1_weighted
    metrics["fit_seconds"] = time.perf_counter() - started
    mlflow.log_metrics(metrics)
    mlflow.log_dict(result.report, "evaluation/classification_report.json")
    mlflow.log_text(result.report_text, "evaluation/classification_report.txt")
    figure = evaluation.confusion_figure(result, f"{name}: test confusion matrix")
    mlflow.log_figure(figure, "evaluation/confusion_matrix.png")
    return result, metrics


def register(fitted: Fitted, final: FinalData, name: str) -> tuple[str, onnx_export.Exported]:
    """Log the model (with the transformation it was trained with) and register it with its
    ONNX form; its new version and that form. A model whose ONNX form does not give its own
    labels on every test row is not registered (onnx_export.ExportMismatch)."""
    import mlflow
    from mlflow.models import infer_signature

    exported = onnx_export.export_checked(
        fitted.model, onnx_export.check_rows(final.X_test.to_numpy(), final.transformation)
    )

    mlflow.log_text(
        json.dumps({"transformation_version": final.transformation_version}),
        f"{registry.TRANSFORMATION_ARTIFACT_DIR}/version.json",
    )
    mlflow.log_text(final.transformation.data.decode(), registry.TRANSFORMATION_ARTIFACT)
    sample = final.X_test.head(20)
    info = mlflow.sklearn.log_model(
        fitted.model,
        name="model",
        signature=infer_signature(sample, fitted.model.predict(sample.to_numpy())),
        pip_requirements=pip_requirements(),
        registered_model_name=name,
        # skops: the only format a model service reads (registry.model_files).
        serialization_format=model_files.SERIALIZATION_FORMAT,
        skops_trusted_types=list(model_files.TRUSTED_TYPES),
    )
    version = str(info.registered_model_version)
    artifacts.record_model_sha256(mlflow.get_tracking_uri(), name, version)
    onnx_export.log_form(name, version, exported, final.transformation_version)
    log_drift_reference(name, version, final)
    log_calibration(name, version, fitted, final)
    return version, exported


def log_calibration(name: str, version: str, fitted: Fitted, final: FinalData) -> None:
    """How often the version is right per confidence bin on its test split, on the version:
    what turns its served confidence into the label-free estimate of its served accuracy."""
    import mlflow
    import numpy as np

    scores = fitted.model.predict_proba(final.X_test.to_numpy())
    answered = fitted.model.classes_[np.argmax(scores, axis=1)]
    calibration = Calibration.fit(scores.max(axis=1), answered == final.y_test.to_numpy())
    client = mlflow.MlflowClient()
    client.set_model_version_tag(name, version, Tag.CONFIDENCE_CALIBRATION, calibration.dumps())


def log_drift_reference(name: str, version: str, final: FinalData) -> None:
    """The training split's feature distribution, logged on the run and named (by its content
    hash) on the version: what the serving side measures drift against."""
    import mlflow

    reference = drift_reference.of_features(final.features_train, str(final.manifest["dataset"]))
    mlflow.log_text(reference.dumps().decode(), registry.DRIFT_REFERENCE_ARTIFACT)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(name, version, Tag.DRIFT_REFERENCE, reference.version)


def tag_version(
    client: Any, name: str, version: str, lineage: Lineage, fitted: Fitted, result: Evaluation
) -> None:
    tags = {
        **lineage.tags(),
        Tag.HYPERPARAMETERS: json.dumps(fitted.params, sort_keys=True),
        Tag.TEST_ACCURACY: repr(result.metrics["test_accuracy"]),
        Tag.TEST_F1_WEIGHTED: repr(result.metrics["test_f1_weighted"]),
        Tag.TEST_F1_MACRO: repr(result.metrics["test_f1_macro"]),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def synthetic_stays_challenger(
    client: Any, name: str, version: str, result: Evaluation
) -> Decision:
    """A version trained on synthetic data: `challenger`, never compared, whatever its score."""
    import mlflow

    decision = Decision(
        version=version,
        promoted=False,
        reason="trained on the synthetic sample: never champion but where "
        "CRIMES_TRAIN_ALLOW_SYNTHETIC_CHAMPION allows it (the demo)",
        candidate_f1=result.f1_weighted,
        champion_version=None,
        champion_f1=None,
    )
    promotion.set_alias(client, name, registry.CHALLENGER, version)
    tags = decision.as_tags()
    mlflow.set_tags(tags)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return decision


def decide_promotion(
    client: Any,
    name: str,
    version: str,
    fitted: Fitted,
    final: FinalData,
    result: Evaluation,
    lake: Lake,
    settings: TrainingSettings,
) -> Decision:
    """The alias the new version earns, the champion and the candidate scored on the same raw
    rows (`comparison`); the decision, both scores and the rows, tagged on the version and the
    run."""
    import mlflow

    decision = promotion.promote(
        client,
        name,
        version,
        result.f1_weighted,
        lambda champion: comparison.compare(
            champion,
            name,
            fitted.model,
            final,
            result.f1_weighted,
            lake,
            settings.promotion_min_rows,
        ),
        floor=settings.promotion_floor_f1,
        attempts=settings.promotion_attempts,
    )
    tags = decision.as_tags()
    mlflow.set_tags(tags)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if decision.champion_f1 is not None:
        mlflow.log_metric("champion_f1_weighted_rescored", decision.champion_f1)
        mlflow.log_metric("candidate_f1_weighted_same_rows", decision.candidate_f1)
    return decision


def publish_bundle(
    lake: Lake,
    name: str,
    version: str,
    run_id: str,
    fitted: Fitted,
    exported: onnx_export.Exported,
    final: FinalData,
    result: Evaluation,
    lineage: Lineage,
) -> str:
    """The new champion's fallback bundle in the data lake; where it is."""
    bundle = bundles.bundle_of(
        name,
        version,
        run_id,
        exported.data,
        final.transformation,
        metrics=result.metrics,
        hyperparameters=fitted.params,
        **{k: v for k, v in lineage.tags().items() if k != Tag.TRANSFORMATION_VERSION},
    )
    bundles.write_bundle(lake, bundle)
    return lake.url(layout.bundle_prefix(name, version))


def _champion_hyperparameters(
    client: Any, name: str, transformation_version: str
) -> dict[str, Any] | None:
    """The champion's hyperparameters, as the search's first guess, when they still apply."""
    champion = promotion.current_champion(client, name)
    if champion is None or champion.tags.get(Tag.TRANSFORMATION_VERSION) != transformation_version:
        return None
    params = json.loads(champion.tags.get(Tag.HYPERPARAMETERS, "{}"))
    guess = {k: params[k] for k in models.DTC_SPACE if k in params}
    return guess if len(guess) == len(models.DTC_SPACE) else None


def run_training(
    settings: TrainingSettings | None = None,
    kinds: tuple[str, ...] = KINDS,
    lake: Lake | None = None,
    tracking_config: TrackingSettings | None = None,
    dataset: str | None = None,
    report: Callable[[str], None] | None = None,
) -> list[TrainingSummary]:
    """Train the models on one dataset: the one named, else the year's current one."""
    settings = settings or TrainingSettings()
    lake = lake or Lake()
    final = datasets.load_final(lake, settings.year, dataset)
    return [train(kind, final, settings, lake, tracking_config, report=report) for kind in kinds]


__all__ = ["KINDS", "TrainingSummary", "run_training", "train"]
