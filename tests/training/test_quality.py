"""Model checks on the real 2024 data: both models clear the quality bar on the test split.

Same data path as production (preprocess -> split -> fitted transformation), without MLflow;
the Decision Tree uses the search's first guess, so a search can only do as well or better.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from crimes import contract
from crimes.etl.split import Split
from crimes.training import evaluate, models
from crimes.training.settings import TrainingSettings
from crimes.transformation import fitting


@pytest.fixture(scope="module")
def matrices(real_splits: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    parts = real_splits
    columns = list(contract.FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted, x_train = fitting.fit_transform(parts.train[columns], parts.train[contract.TARGET])
    x_test = fitting.transform(fitted, parts.test[columns])
    return (
        x_train.to_numpy(),
        parts.train[contract.TARGET].to_numpy(),
        x_test.to_numpy(),
        parts.test[contract.TARGET].to_numpy(),
    )


def test_decision_tree_accuracy_at_least_0_999(
    matrices: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    from sklearn.tree import DecisionTreeClassifier

    x_train, y_train, x_test, y_test = matrices
    model = DecisionTreeClassifier(**models.DTC_FIRST_GUESS, random_state=42).fit(x_train, y_train)
    assert evaluate.scores(y_test, model.predict(x_test))["test_accuracy"] >= 0.999


def test_lda_accuracy_at_least_0_99(
    matrices: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x_train, y_train, x_test, y_test = matrices
    fitted = models.fit_lda(x_train, y_train, TrainingSettings())
    assert evaluate.scores(y_test, fitted.model.predict(x_test))["test_accuracy"] >= 0.99
