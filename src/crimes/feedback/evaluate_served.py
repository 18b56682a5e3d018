"""`evaluate_served_predictions`: the one function the Airflow DAG and `crimes evaluate` run.

Reads the prediction log of the last `lookback_days` and the labels of every dataset the ETL
published for the years those predictions may concern, joins them, writes the tables to the
lake (the pointer last), then records each served version's figures in the registry.
"""

from __future__ import annotations

import datetime as dt

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from crimes.feedback import inputs, results
from crimes.feedback.evaluation import Evaluation, evaluate
from crimes.feedback.trigger import AccuracyPolicy
from crimes.lake import layout
from crimes.lake.storage import Lake
from crimes.ops.logs import get_logger

log = get_logger(__name__)


class EvaluationSettings(BaseSettings):
    """`CRIMES_EVALUATION_*`: how far back the served predictions are evaluated."""

    model_config = SettingsConfigDict(
        env_prefix="CRIMES_EVALUATION_", extra="ignore", validate_by_name=True
    )

    lookback_days: int = Field(default=90, ge=1, le=3660)
    # The years whose published records label the predictions (empty: every published year).
    years: list[int] = Field(default_factory=list)
    # A champion's realized accuracy below this on `low_days` judged days in a row (days with
    # at least `min_labelled` labelled records) may start a retrain; the alert
    # CrimesServedAccuracyLow pages on the same figures.
    min_accuracy: float = Field(default=0.8, gt=0, le=1)
    low_days: int = Field(default=3, ge=1, le=90)
    min_labelled: int = Field(default=200, ge=1)
    retrain_cooldown_hours: float = Field(default=24.0, ge=0)

    def policy(self) -> AccuracyPolicy:
        return AccuracyPolicy(
            min_accuracy=self.min_accuracy,
            days=self.low_days,
            min_labelled=self.min_labelled,
            cooldown_hours=self.retrain_cooldown_hours,
        )


def label_years(lake: Lake, settings: EvaluationSettings) -> list[int]:
    """The years whose published records may label served predictions: the setting's, else
    every year the ETL has published (a replay of an older file is served today)."""
    if settings.years:
        return sorted(settings.years)
    published = [name for name in lake.folders(layout.CRIMES_PREFIX) if name.isdigit()]
    return sorted(int(name) for name in published if lake.exists(layout.pointer_key(int(name))))


def evaluate_served_predictions(
    lake: Lake,
    tracking_uri: str | None,
    settings: EvaluationSettings | None = None,
    today: dt.date | None = None,
) -> Evaluation:
    settings = settings or EvaluationSettings()
    since = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=settings.lookback_days)
    served = inputs.read_log(lake, since)
    labels = inputs.read_labels(lake, label_years(lake, settings))
    client = None
    if tracking_uri:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
    calibrations = results.calibrations(client, served) if client is not None else {}
    evaluation = evaluate(served, labels, calibrations)
    manifest = results.write_tables(lake, evaluation)
    recorded = results.record_in_registry(client, evaluation) if client is not None else 0
    log.info(
        "evaluation.done",
        predictions=len(served),
        labels=len(labels),
        versions=len(evaluation.versions),
        registry_versions=recorded,
        evaluated_at=manifest["evaluated_at"],
    )
    return evaluation
