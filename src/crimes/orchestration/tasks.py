"""The bodies of the Airflow tasks, over the library: what each task runs, given its DAG run's
params (and the summaries of the tasks before it, as the dicts Airflow passes along).

Imported inside the tasks, never at DAG parse time (it loads pandas and scikit-learn).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crimes.etl import pipeline as etl
from crimes.etl.settings import EtlSettings
from crimes.lake import datasets
from crimes.lake.storage import Lake
from crimes.ops.logs import get_logger
from crimes.orchestration import monitoring, retrain_audit
from crimes.orchestration.assets import triggering_dataset, triggering_year
from crimes.training import pipeline as training
from crimes.training.settings import TrainingSettings

Summary = dict[str, Any]

log = get_logger(__name__)


def etl_settings(params: Mapping[str, Any]) -> EtlSettings:
    overrides: dict[str, Any] = {"year": int(params["year"])}
    if params.get("source"):
        overrides["source"] = params["source"]
    return EtlSettings(**overrides)


def extract(params: Mapping[str, Any]) -> Summary:
    return etl.extract_stage(etl_settings(params), Lake()).as_dict()


def preprocess(params: Mapping[str, Any], extracted: Summary) -> Summary:
    stage = etl.preprocess_stage(etl_settings(params), Lake(), etl.Extracted.from_dict(extracted))
    return stage.as_dict()


def final_set(params: Mapping[str, Any], extracted: Summary, preprocessed: Summary) -> Summary:
    stage = etl.final_set_stage(
        etl_settings(params),
        Lake(),
        etl.Extracted.from_dict(extracted),
        etl.Preprocessed.from_dict(preprocessed),
    )
    return stage.as_dict()


def publish(
    params: Mapping[str, Any],
    extracted: Summary,
    preprocessed: Summary,
    final: Summary,
    run_id: str,
) -> Summary:
    """The published manifest."""
    return etl.publish_stage(
        etl_settings(params),
        Lake(),
        etl.Extracted.from_dict(extracted),
        etl.Preprocessed.from_dict(preprocessed),
        etl.FinalSet.from_dict(final),
        orchestrator_run=run_id,
    )


def train(kind: str, context: Mapping[str, Any]) -> Summary:
    """Train one model on the dataset the run is about: its `dataset` param, else the one the
    ETL event that triggered it names, else the year's current one (both models of a run train
    on the same dataset, even if another ETL publishes meanwhile)."""
    params = context["params"]
    defaults = TrainingSettings()
    settings = TrainingSettings(
        year=triggering_year(context, defaults.year),
        trials=params.get("trials") or defaults.trials,
        cv_folds=params.get("cv_folds") or defaults.cv_folds,
    )
    lake = Lake()
    dataset = params.get("dataset") or triggering_dataset(context)
    final = datasets.load_final(lake, settings.year, dataset)
    summary = training.train(kind, final, settings, lake, orchestrator_run=context["run_id"])
    return summary.as_dict()


def check_drift(params: Mapping[str, Any], active_runs: int, run_id: str) -> Summary:
    """The drift verdict on what the gateway serves now, and whether it may start a retrain
    (`retrain`: crimes.drift.trigger's rules, over the audit log's state; `active_runs`: ETL
    and training runs queued or running). Every check is written to the audit log."""
    # Only the threshold may come from a run's conf: the gateway is the deployment's own.
    overrides = (
        {"drift_threshold": params["drift_threshold"]} if params.get("drift_threshold") else {}
    )
    settings = monitoring.MonitorSettings(**overrides)
    verdict, report = monitoring.check_drift(settings)
    entry = retrain_audit.check(
        Lake(), verdict, report, active_runs, settings.trigger_policy(), run_id
    )
    log.info(
        "drift.checked",
        action=entry["action"],
        reason=entry["reason"],
        streak=entry["streak"],
        versions={model: state.get("version") for model, state in report.items()},
    )
    return {"retrain": entry["action"] == "triggered", "reason": entry["reason"]}


def evaluate_served(params: Mapping[str, Any], active_runs: int, run_id: str) -> Summary:
    """The served predictions joined with the labels published so far (tables to the lake,
    figures to the registry), then whether the champions' realized accuracy calls for a
    retrain (crimes.feedback.trigger's rules; every check written to its audit log)."""
    from crimes.feedback.evaluate_served import EvaluationSettings, evaluate_served_predictions
    from crimes.settings import tracking_settings

    overrides = {"lookback_days": params["lookback_days"]} if params.get("lookback_days") else {}
    settings = EvaluationSettings(**overrides)
    lake = Lake()
    evaluation = evaluate_served_predictions(lake, tracking_settings().tracking_uri, settings)
    entry = retrain_audit.check_accuracy(
        lake, evaluation.days, active_runs, settings.policy(), run_id
    )
    log.info("evaluation.checked", action=entry["action"], reason=entry["reason"])
    versions = evaluation.versions.astype(object).where(evaluation.versions.notna(), None)
    return {
        "retrain": entry["action"] == "triggered",
        "reason": entry["reason"],
        "versions": [
            {k: str(v) if k in ("first_served", "last_served") else v for k, v in row.items()}
            for row in versions.to_dict("records")
        ],
    }
