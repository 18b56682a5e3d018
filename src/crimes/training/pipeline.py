"""Train one model end to end: load the published data, fit, evaluate, log, register, promote,
and publish the champion's fallback bundle. `crimes train` and the Airflow DAG both call it."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from crimes import registry
from crimes.lake import datasets, layout
from crimes.lake.datasets import FinalData
from crimes.lake.storage import Lake
from crimes.ops.logs import get_logger
from crimes.registry import Tag, bundles, tracking
from crimes.settings import TrackingSettings, tracking_settings
from crimes.training import evaluate as evaluation
from crimes.training import models, promotion
from crimes.training.settings import TrainingSettings

log = get_logger(__name__)

KINDS = tuple(registry.MODELS)


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
) -> dict[str, Any]:
    import mlflow
    from mlflow.models import infer_signature

    if kind not in registry.MODELS:
        raise ValueError(f"unknown model {kind!r}: expected one of {', '.join(KINDS)}")
    name = registry.MODELS[kind]
    config = tracking_config or tracking_settings()
    client = mlflow.MlflowClient(config.tracking_uri)
    manifest = final.manifest
    x_train = final.X_train.to_numpy(dtype=np.float64)
    y_train = final.y_train.astype(str).to_numpy()
    x_test = final.X_test.to_numpy(dtype=np.float64)
    y_test = final.y_test.astype(str).to_numpy()
    lineage = {
        Tag.TRANSFORMATION_VERSION: final.transformation_version,
        Tag.ETL_RUN_ID: str(manifest["etl_run_id"]),
        Tag.DATASET: str(manifest["dataset"]),
        Tag.DATA_SNAPSHOT: str(manifest["snapshot"]),
        Tag.SYNTHETIC: str(bool(manifest.get("synthetic", False))).lower(),
    }
    run_tags = {"stage": "training", "model": kind, **lineage}
    if orchestrator_run:
        run_tags["airflow_run_id"] = orchestrator_run
    started = time.perf_counter()
    with tracking.run(f"{kind}-{manifest['dataset']}", run_tags, config) as run:
        mlflow.log_params(
            {
                "model": kind,
                "registered_model": name,
                "rows_train": len(y_train),
                "rows_test": len(y_test),
                "n_features": x_train.shape[1],
                "seed": settings.seed,
            }
        )
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
                x_train,
                y_train,
                settings,
                callbacks=[callback],
                first_guess=_champion_hyperparameters(client, name, final.transformation_version),
            )
        else:
            fitted = models.fit_lda(x_train, y_train, settings)
        mlflow.log_params({f"hp.{k}": v for k, v in fitted.params.items()})
        result = evaluation.evaluate(fitted.model, x_test, y_test)
        metrics = dict(result.metrics)
        if fitted.cv_f1_weighted is not None:
            metrics["cv_f1_weighted"] = fitted.cv_f1_weighted
        metrics["fit_seconds"] = time.perf_counter() - started
        mlflow.log_metrics(metrics)
        mlflow.log_dict(result.report, "evaluation/classification_report.json")
        mlflow.log_text(result.report_text, "evaluation/classification_report.txt")
        figure = evaluation.confusion_figure(result, f"{name}: test confusion matrix")
        mlflow.log_figure(figure, "evaluation/confusion_matrix.png")
        mlflow.log_text(
            json.dumps({"transformation_version": final.transformation_version}),
            "transformation/version.json",
        )
        mlflow.log_artifact(
            _temporary_file(final), artifact_path=registry.TRANSFORMATION_ARTIFACT_DIR
        )
        sample = final.X_test.head(20)
        info = mlflow.sklearn.log_model(
            fitted.model,
            name="model",
            signature=infer_signature(sample, fitted.model.predict(sample.to_numpy())),
            pip_requirements=pip_requirements(),
            registered_model_name=name,
            # skops (MLflow's default format) refuses a tree's node storage unless it is named
            # as trusted; these files are made here, by this training.
            skops_trusted_types=models.TRUSTED_TYPES.get(kind),
        )
        version = str(info.registered_model_version)
        version_tags = {
            **lineage,
            Tag.HYPERPARAMETERS: json.dumps(fitted.params, sort_keys=True),
            Tag.TEST_ACCURACY: repr(result.metrics["test_accuracy"]),
            Tag.TEST_F1_WEIGHTED: repr(result.metrics["test_f1_weighted"]),
            Tag.TEST_F1_MACRO: repr(result.metrics["test_f1_macro"]),
        }
        for key, value in version_tags.items():
            client.set_model_version_tag(name, version, key, value)

        def rescore(champion: Any) -> float:
            model = mlflow.sklearn.load_model(f"models:/{name}/{champion.version}")
            return evaluation.scores(y_test, model.predict(x_test))["test_f1_weighted"]

        decision = promotion.promote(
            client,
            name,
            version,
            result.f1_weighted,
            final.transformation_version,
            rescore,
            floor=settings.promotion_floor_f1,
            attempts=settings.promotion_attempts,
        )
        mlflow.set_tags(decision.as_tags())
        if decision.champion_f1 is not None:
            mlflow.log_metric("champion_f1_weighted_rescored", decision.champion_f1)
        bundle = None
        if decision.promoted:
            bundle = bundles.bundle_of(
                name,
                version,
                run.info.run_id,
                fitted.model,
                final.transformer,
                metrics=result.metrics,
                hyperparameters=fitted.params,
                **{k: v for k, v in lineage.items() if k != Tag.TRANSFORMATION_VERSION},
            )
            bundles.write_bundle(lake, bundle)
    summary = {
        "model": kind,
        "name": name,
        "version": version,
        "run_id": run.info.run_id,
        "metrics": metrics,
        "hyperparameters": fitted.params,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "champion_before": decision.champion_version,
        "bundle": lake.url(layout.bundle_prefix(name, version)) if bundle else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("training.done", **{k: v for k, v in summary.items() if k != "hyperparameters"})
    return summary


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


def _temporary_file(final: FinalData) -> str:
    import tempfile
    from pathlib import Path

    from crimes.transformation import fitting

    folder = Path(tempfile.mkdtemp(prefix="crimes-transformation-"))
    path = folder / registry.TRANSFORMATION_FILE
    path.write_bytes(fitting.dumps(final.transformer))
    return str(path)


def run_training(
    settings: TrainingSettings | None = None,
    kinds: tuple[str, ...] = KINDS,
    lake: Lake | None = None,
    tracking_config: TrackingSettings | None = None,
) -> list[dict[str, Any]]:
    settings = settings or TrainingSettings()
    lake = lake or Lake()
    final = datasets.load_final(lake, settings.year)
    return [train(kind, final, settings, lake, tracking_config) for kind in kinds]


__all__ = ["KINDS", "run_training", "train"]
