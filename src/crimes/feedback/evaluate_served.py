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
from crimes.lake.storage import Lake
from crimes.ops.logs import get_logger

log = get_logger(__name__)


class EvaluationSettings(BaseSettings):
    """`CRIMES_EVALUATION_*`: how far back the served predictions are evaluated."""

    model_config = SettingsConfigDict(
        env_prefix="CRIMES_EVALUATION_", extra="ignore", validate_by_name=True
    )

    lookback_days: int = Field(default=90, ge=1, le=3660)


def label_years(served_days: list[str]) -> set[int]:
    """The years whose published records may label these predictions: each served day's year
    and the one before (a record of late December is often served in January)."""
    years = {int(day[:4]) for day in served_days}
    return years | {year - 1 for year in years}


def evaluate_served_predictions(
    lake: Lake,
    tracking_uri: str | None,
    settings: EvaluationSettings | None = None,
    today: dt.date | None = None,
) -> Evaluation:
    settings = settings or EvaluationSettings()
    since = (today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=settings.lookback_days)
    served = inputs.read_log(lake, since)
    days = served["served_at"].dt.strftime("%Y-%m-%d").unique().tolist() if len(served) else []
    labels = inputs.read_labels(lake, label_years(days))
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
