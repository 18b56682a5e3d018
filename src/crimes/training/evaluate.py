"""Test-set evaluation: the metrics, the per-class report and the confusion matrix figure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    report: dict[str, Any]
    report_text: str
    labels: list[str]
    confusion: Any

    @property
    def f1_weighted(self) -> float:
        return self.metrics["test_f1_weighted"]


def evaluate(model: Any, x_test: Any, y_test: Any) -> Evaluation:
    predicted = model.predict(x_test)
    labels = sorted(set(np.asarray(y_test).tolist()) | set(np.asarray(predicted).tolist()))
    return Evaluation(
        metrics=scores(y_test, predicted),
        report=classification_report(
            y_test, predicted, labels=labels, output_dict=True, zero_division=0
        ),
        report_text=classification_report(y_test, predicted, labels=labels, zero_division=0),
        labels=labels,
        confusion=confusion_matrix(y_test, predicted, labels=labels),
    )


def scores(y_true: Any, predicted: Any) -> dict[str, float]:
    return {
        "test_accuracy": float(accuracy_score(y_true, predicted)),
        "test_f1_weighted": float(f1_score(y_true, predicted, average="weighted", zero_division=0)),
        "test_f1_macro": float(f1_score(y_true, predicted, average="macro", zero_division=0)),
    }


def confusion_figure(evaluation: Evaluation, title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = plt.subplots(figsize=(11, 10))
    ConfusionMatrixDisplay(evaluation.confusion, display_labels=evaluation.labels).plot(
        ax=axes, xticks_rotation=90, colorbar=False, values_format="d"
    )
    axes.set_title(title)
    figure.tight_layout()
    return figure
