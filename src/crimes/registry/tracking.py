"""MLflow access shared by the ETL and the training: one experiment, runs with clear names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from crimes.settings import TrackingSettings, tracking_settings


@contextmanager
def run(name: str, tags: dict[str, str], settings: TrackingSettings | None = None) -> Iterator[Any]:
    """An MLflow run in the project's experiment; fails fast when the server is unreachable."""
    import mlflow

    settings = settings or tracking_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run(run_name=name, tags=tags) as active:
        yield active
