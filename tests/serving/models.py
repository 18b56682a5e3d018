"""Small real models for the serving tests: synthetic records, the project's transformation,
scikit-learn classifiers, as registry bundles (the format every fallback uses)."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.tree import DecisionTreeClassifier

from crimes import contract
from crimes.etl import synthetic
from crimes.etl.preprocess import preprocess
from crimes.registry import bundles
from crimes.training import onnx_export
from crimes.transformation import fitting
from crimes.transformation.document import TransformationDocument

Kind = Literal["dtc", "lda"]


@dataclass(frozen=True)
class Trained:
    """A fitted transformation and classifier, and held-out rows already transformed."""

    transformation: TransformationDocument
    model: Any
    train: pd.DataFrame
    test: npt.NDArray[np.float64]
    # The same held-out rows as raw records (the contract's features, as a client sends them).
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def transformation_version(self) -> str:
        return self.transformation.version

    @property
    def feature_names(self) -> list[str]:
        return [str(c) for c in self.train.columns]


def train(
    kind: Kind,
    rows: int = 1500,
    seed: int = 7,
    max_depth: int | None = None,
    *,
    on_array: bool = False,
) -> Trained:
    """A model trained on synthetic rows; `on_array` fits on the bare matrix, as the training
    does (no feature names in the classifier), else on the named frame."""
    data, _ = preprocess(synthetic.sample(rows, seed=seed))
    cut = int(len(data) * 0.8)
    features, target = data[list(contract.FEATURES)], data[contract.TARGET].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted, matrix = fitting.fit_transform(features.iloc[:cut], target.iloc[:cut])
        test = fitting.transform(fitted, features.iloc[cut:]).to_numpy()
    model: Any = (
        DecisionTreeClassifier(random_state=seed, max_depth=max_depth)
        if kind == "dtc"
        else LinearDiscriminantAnalysis()
    )
    model.fit(matrix.to_numpy() if on_array else matrix, target.iloc[:cut])
    records = json.loads(features.iloc[cut:].to_json(orient="records"))
    return Trained(
        transformation=fitting.export(fitted), model=model, train=matrix, test=test, records=records
    )


_FORMS: dict[int, bytes] = {}


def onnx(trained: Trained) -> bytes:
    """The classifier's ONNX form, as the training exports and checks it (once per model)."""
    if id(trained.model) not in _FORMS:
        rows = onnx_export.check_rows(trained.test, trained.transformation)
        _FORMS[id(trained.model)] = onnx_export.export_checked(trained.model, rows).data
    return _FORMS[id(trained.model)]


def bundle(trained: Trained, name: str, version: str, run_id: str = "run-1") -> bundles.ModelBundle:
    return bundles.bundle_of(name, version, run_id, onnx(trained), trained.transformation)


def labels(trained: Trained, rows: npt.NDArray[np.float64]) -> list[str]:
    """The classifier's own predictions (offline, in this process) for transformed rows."""
    with warnings.catch_warnings():
        # Fitted on named columns, given the same columns as an array: nothing to warn about.
        warnings.simplefilter("ignore", UserWarning)
        return [str(c) for c in trained.model.predict(rows)]


def probabilities(trained: Trained, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return np.asarray(trained.model.predict_proba(rows), dtype=np.float64)
