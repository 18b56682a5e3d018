"""Where an evaluation's figures go: a table in the data lake (the exporter, the notebook and
the alerts read the latest), and the registry (each served version's realized accuracy as
tags of the version, and as metrics of its run, one step per served day)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from crimes.feedback.calibration import Calibration
from crimes.feedback.evaluation import Evaluation
from crimes.lake import layout, storage
from crimes.lake.storage import Lake
from crimes.ops.logs import get_logger
from crimes.registry import Tag

log = get_logger(__name__)


def write_tables(lake: Lake, evaluation: Evaluation, stamp: str | None = None) -> dict[str, Any]:
    """The evaluation's tables under their own prefix, then the pointer readers follow."""
    # (To the microsecond: two evaluations never share a folder.)
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    files = {
        f"{name}.parquet": storage.parquet_bytes(table)
        for name, table in evaluation.tables().items()
    }
    written = storage.write_files(lake, layout.evaluation_prefix(stamp), files)
    manifest = {
        "evaluated_at": stamp,
        "rows": {name: len(table) for name, table in evaluation.tables().items()},
        "files": {"tables": written},
    }
    storage.publish_pointer(lake, layout.evaluation_pointer(), manifest)
    return manifest


def read_tables(lake: Lake) -> dict[str, pd.DataFrame]:
    """The latest evaluation's tables, each verified against the pointer."""
    manifest = storage.read_pointer(lake, layout.evaluation_pointer())
    return {
        name.removesuffix(".parquet"): storage.read_parquet_bytes(storage.read_file(lake, entry))
        for name, entry in manifest["files"]["tables"].items()
    }


def calibrations(client: Any, versions: pd.DataFrame) -> dict[tuple[str, str], Calibration]:
    """The calibration each served version was registered with (none: not in the result)."""
    found: dict[tuple[str, str], Calibration] = {}
    for name, version in (
        versions[["model_name", "model_version"]].drop_duplicates().itertuples(index=False)
    ):
        tags = _version(client, str(name), str(version))
        calibration = Calibration.loads(tags.get(Tag.CONFIDENCE_CALIBRATION, "")) if tags else None
        if calibration is not None:
            found[(str(name), str(version))] = calibration
    return found


def _version(client: Any, name: str, version: str) -> Mapping[str, str] | None:
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_model_version(name, version).tags)
    except MlflowException as error:
        log.warning("evaluation.version_unknown", model=name, version=version, error=str(error))
        return None


def record_in_registry(client: Any, evaluation: Evaluation) -> int:
    """Each served version's figures on the version (tags) and its run (a metric per served
    day); how many versions were recorded."""
    from mlflow.entities import Metric

    recorded = 0
    champions = evaluation.versions
    for row in champions.itertuples(index=False):
        name, version = str(row.model_name), str(row.model_version)
        try:
            model_version = client.get_model_version(name, version)
        except Exception as error:  # a version the registry does not know: the lake has it
            log.warning("evaluation.version_unknown", model=name, version=version, error=str(error))
            continue
        role = str(row.role)
        for tag, value in (
            (Tag.SERVED_ACCURACY, row.accuracy),
            (Tag.SERVED_LABELLED, row.labelled),
            (Tag.SERVED_PREDICTIONS, row.predictions),
            (Tag.SERVED_ESTIMATE, row.estimate),
        ):
            client.set_model_version_tag(name, version, f"{tag}.{role}", _text(value))
        days = evaluation.days[
            (evaluation.days["model_name"] == name)
            & (evaluation.days["model_version"] == version)
            & (evaluation.days["role"] == role)
        ]
        metrics = []
        for day in days.itertuples(index=False):
            when = pd.Timestamp(str(day.day), tz="UTC")
            step = int(when.timestamp() // 86_400)
            stamp = int(when.timestamp() * 1000)
            figures: tuple[tuple[str, Any], ...] = (
                (f"{Tag.SERVED_ACCURACY}_{role}", day.accuracy),
                (f"{Tag.SERVED_LABELLED}_{role}", day.labelled),
                (f"{Tag.SERVED_ESTIMATE}_{role}", day.estimate),
            )
            for key, value in figures:
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    metrics.append(Metric(key, float(value), stamp, step))
        if metrics and model_version.run_id:
            client.log_batch(model_version.run_id, metrics=metrics)
        recorded += 1
    return recorded


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
