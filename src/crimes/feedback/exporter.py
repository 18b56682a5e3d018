"""The latest evaluation's figures as Prometheus gauges, on the gateway's metrics port: the
evaluation (a DAG) never pushes; each gateway reads the table the pointer names, off the
request path (a background refresh), and a scrape only reads what it holds.

Gauges per served version (`model`, `role`, `version`): realized accuracy and its labelled
records over the evaluation's window, the label-free estimate, and the same for the newest
served day with labels (what the alert CrimesServedAccuracyLow watches). Every gateway replica
exports the same figures: rules aggregate with `min`/`max` by version.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from crimes.lake import layout, storage
from crimes.lake.storage import Lake, LakeError
from crimes.ops.logs import get_logger

log = get_logger(__name__)

LABELS = ("model", "role", "version")


@dataclass(frozen=True)
class Figures:
    evaluated_at: str
    versions: list[dict[str, Any]]
    days: list[dict[str, Any]]


def _rows(lake: Lake, entry: Any) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = pq.read_table(
        io.BytesIO(storage.read_file(lake, entry))
    ).to_pylist()
    return rows


class AccuracyBoard:
    """What the latest evaluation says, refreshed when its pointer changes."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.figures: Figures | None = None
        self.readable = True
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Read the pointer, and the tables when it names a newer evaluation (never raises)."""
        try:
            key = layout.evaluation_pointer()
            if not self.lake.exists(key):
                self.readable = True
                return
            manifest = self.lake.read_json(key)
            if self.figures is not None and self.figures.evaluated_at == manifest["evaluated_at"]:
                self.readable = True
                return
            tables = manifest["files"]["tables"]
            figures = Figures(
                evaluated_at=str(manifest["evaluated_at"]),
                versions=_rows(self.lake, tables["versions.parquet"]),
                days=_rows(self.lake, tables["days.parquet"]),
            )
        except (LakeError, OSError, KeyError, ValueError) as error:
            self.readable = False
            log.warning("accuracy_board.unreadable", error=repr(error))
            return
        with self._lock:
            self.figures, self.readable = figures, True

    def snapshot(self) -> Figures | None:
        with self._lock:
            return self.figures


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _labels(row: dict[str, Any]) -> list[str]:
    return [str(row["model"]), str(row["role"]), str(row["model_version"])]


class AccuracyCollector(Collector):
    def __init__(self, board: AccuracyBoard) -> None:
        self.board = board

    def collect(self) -> Iterator[GaugeMetricFamily]:
        readable = GaugeMetricFamily(
            "crimes_evaluation_readable",
            "Whether the latest evaluation of served predictions could be read from the lake.",
        )
        readable.add_metric([], 1.0 if self.board.readable else 0.0)
        yield readable
        figures = self.board.snapshot()
        if figures is None:
            return
        yield from self._window(figures)
        yield from self._latest_day(figures)

    def _gauge(self, name: str, text: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, text, labels=list(LABELS))

    def _window(self, figures: Figures) -> Iterator[GaugeMetricFamily]:
        accuracy = self._gauge(
            "crimes_served_accuracy",
            "Realized accuracy of a served version on its labelled live records.",
        )
        labelled = self._gauge(
            "crimes_served_labelled_records", "Served records of a version with a published label."
        )
        predictions = self._gauge(
            "crimes_served_predictions", "Records a version answered (in the evaluation window)."
        )
        estimate = self._gauge(
            "crimes_served_accuracy_estimate",
            "Label-free estimate of a version's accuracy (its calibrated confidence).",
        )
        for row in figures.versions:
            labels = _labels(row)
            predictions.add_metric(labels, float(row["predictions"]))
            labelled.add_metric(labels, float(row["labelled"]))
            for family, value in ((accuracy, row["accuracy"]), (estimate, row["estimate"])):
                number = _number(value)
                if number is not None:
                    family.add_metric(labels, number)
        yield from (accuracy, labelled, predictions, estimate)

    def _latest_day(self, figures: Figures) -> Iterator[GaugeMetricFamily]:
        accuracy = self._gauge(
            "crimes_served_day_accuracy",
            "Realized accuracy of a version on the newest served day with labels.",
        )
        labelled = self._gauge(
            "crimes_served_day_labelled_records", "Labelled records of that day."
        )
        newest: dict[tuple[str, ...], dict[str, Any]] = {}
        for row in figures.days:
            key = tuple(_labels(row))
            if row["labelled"] and (key not in newest or row["day"] > newest[key]["day"]):
                newest[key] = row
        for key, row in sorted(newest.items()):
            number = _number(row["accuracy"])
            if number is not None:
                accuracy.add_metric(list(key), number)
                labelled.add_metric(list(key), float(row["labelled"]))
        yield from (accuracy, labelled)
