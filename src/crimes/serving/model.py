"""A loaded, checked model version: what the server predicts with, and what it reports.

A `LoadedModel` is built from a `ModelBundle` (wherever that came from) only after the checks
pass: the classifier's inputs match its transformation's output columns (and the logged
signature, when there is one), its classes are FBI codes, and a smoke prediction works. It is
never mutated afterwards, so swapping one for another is a single reference assignment.
"""

from __future__ import annotations

import dataclasses
import enum
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import sklearn

from crimes.protocol import inference
from crimes.registry import Tag
from crimes.registry.bundles import ModelBundle
from crimes.serving.errors import InvalidInput, ModelLoadError, PreconditionFailed
from crimes.transformation.lookup import LookupTransformer

PLATFORM: Final = "sklearn"
FloatMatrix = inference.FloatMatrix
Features = inference.Features
LabelFunction = Callable[[Features], npt.NDArray[Any]]


class Source(enum.StrEnum):
    """Where the served copy of a model was read from (reported in metadata and logs)."""

    MLFLOW = "mlflow"
    LOCAL_COPY = "local_copy"
    LAKE = "lake"
    BUNDLE_PATH = "bundle_path"


def configure_thread() -> None:
    """Settings of every thread that predicts (scikit-learn's configuration is per thread).

    Inputs are checked finite before they reach the model, so scikit-learn's own check (a pass
    over the data per call) is redundant. Classifiers fitted on named columns are given arrays
    of exactly those columns, so scikit-learn's feature-name warning is noise (that filter is
    process-wide: this runs in model server processes only).
    """
    sklearn.set_config(assume_finite=True)
    warnings.filterwarnings("ignore", message="X does not have valid feature names")


@dataclass(frozen=True)
class Prediction:
    labels: npt.NDArray[Any]
    probabilities: FloatMatrix | None


@dataclass(frozen=True, eq=False)
class LoadedModel:
    bundle: ModelBundle
    source: Source
    location: str
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    alias: str = ""
    loaded_at: float = field(default_factory=time.time)
    # The class labels as BYTES tensor elements, encoded once.
    labels: inference.Labels = field(default_factory=lambda: inference.Labels(()), repr=False)
    # The version's own transformation, for records sent raw (built from its document).
    transformer: LookupTransformer | None = field(default=None, repr=False)
    # The classifier's own label computation minus scikit-learn's per-call input validation,
    # when it gave exactly the classifier's predictions at load time (see `_direct_labels`).
    direct_labels: LabelFunction | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def run_id(self) -> str:
        return str(self.bundle.metadata.get("run_id", ""))

    @property
    def transformation_version(self) -> str:
        return self.bundle.transformation_version

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def model_class(self) -> str:
        return type(self.bundle.model).__name__

    def describe(self) -> dict[str, Any]:
        """What logs and metadata say about this model."""
        return {
            "model": self.name,
            "version": self.version,
            "source": str(self.source),
            "location": self.location,
            "run_id": self.run_id,
            "transformation_version": self.transformation_version,
            "model_class": self.model_class,
        }

    def check_features(self, features: Features, transformation_version: str | None) -> None:
        """Refuse what this model cannot predict on (after the protocol-level decoding)."""
        if transformation_version is None:
            raise InvalidInput(
                f"request parameter '{Tag.TRANSFORMATION_VERSION}' is missing: name the "
                f"transformation the features were made with ({self.transformation_version})"
            )
        if transformation_version != self.transformation_version:
            raise PreconditionFailed(
                f"features made with transformation {transformation_version}, but model "
                f"{self.name} version {self.version} needs {self.transformation_version}: "
                "transform with the transformation this model reports in its metadata"
            )
        if features.shape[1] != self.n_features:
            raise InvalidInput(
                f"input has {features.shape[1]} features per row, model {self.name} version "
                f"{self.version} needs {self.n_features}"
            )
        finite = np.isfinite(features)
        if not finite.all():
            row, column = (int(i[0]) for i in np.nonzero(~finite))
            raise InvalidInput(
                f"input row {row}, column {column} ({self.feature_names[column]}) is "
                f"{features[row, column]}: features must be finite numbers"
            )

    def transform_records(
        self, columns: dict[str, list[Any]], rows: int
    ) -> tuple[FloatMatrix, list[list[str]]]:
        """Validated records through this version's own transformation; each row's unknown
        categories."""
        assert self.transformer is not None, "prepare() builds it"
        return self.transformer.transform_columns(columns, rows)

    def predict(self, features: Features, probabilities: bool) -> Prediction:
        model = self.bundle.model
        labels = (
            self.direct_labels(features)
            if self.direct_labels is not None
            else model.predict(features)
        )
        return Prediction(
            labels=labels,
            probabilities=np.asarray(model.predict_proba(features), dtype=np.float64)
            if probabilities
            else None,
        )


def prepare(
    bundle: ModelBundle,
    source: Source,
    location: str,
    *,
    alias: str = "",
    signature_columns: list[str] | None = None,
) -> LoadedModel:
    """Check a bundle and make it servable; ModelLoadError says what is wrong with it."""
    where = f"model {bundle.name} version {bundle.version} from {source} ({location})"
    model = bundle.model
    for method in ("predict", "predict_proba"):
        if not callable(getattr(model, method, None)):
            raise ModelLoadError(f"{where}: {type(model).__name__} has no {method}()")
    raw_classes = getattr(model, "classes_", None)
    if raw_classes is None or not all(isinstance(c, str) for c in raw_classes):
        raise ModelLoadError(f"{where}: the classifier's classes must be FBI codes as text")
    classes = tuple(str(c) for c in raw_classes)
    if "classes" in bundle.metadata and list(bundle.metadata["classes"]) != list(classes):
        raise ModelLoadError(f"{where}: metadata classes differ from the classifier's")

    actual = bundle.transformation.version
    if actual != bundle.transformation_version:
        raise ModelLoadError(
            f"{where}: its transformation is {actual}, the version is tagged "
            f"{bundle.transformation_version}"
        )
    columns = list(bundle.transformation.output_columns)
    expected: dict[str, list[str]] = {"the transformation's output": columns}
    if signature_columns is not None:
        expected["the logged signature"] = list(signature_columns)
    if "feature_names" in bundle.metadata:
        expected["the metadata"] = [str(c) for c in bundle.metadata["feature_names"]]
    if hasattr(model, "feature_names_in_"):
        expected["the classifier's fitted columns"] = [str(c) for c in model.feature_names_in_]
    for what, names in expected.items():
        if names != columns:
            raise ModelLoadError(
                f"{where}: input columns of {what} differ from the transformation's output "
                f"({len(names)} vs {len(columns)} columns)"
            )
    if int(getattr(model, "n_features_in_", len(columns))) != len(columns):
        raise ModelLoadError(
            f"{where}: the classifier takes {model.n_features_in_} features, "
            f"the transformation makes {len(columns)}"
        )

    loaded = LoadedModel(
        bundle=bundle,
        source=source,
        location=location,
        classes=classes,
        feature_names=tuple(columns),
        alias=alias,
        labels=inference.Labels(classes),
        transformer=LookupTransformer(bundle.transformation),
    )
    _smoke(loaded, where)
    direct = _direct_labels(model)
    if direct is not None and _agrees(direct, loaded):
        loaded = dataclasses.replace(loaded, direct_labels=direct)
    return loaded


def _direct_labels(model: Any) -> LabelFunction | None:
    """Labels without scikit-learn's per-call input validation, for the two served families.

    The server checks every input itself (2-D float64, finite, the right width), so the
    validation scikit-learn repeats on each call (~70 us, most of a one-row prediction) buys
    nothing. These are the classifiers' own computations after that validation: the fitted
    tree (`tree_`) on float32 rows (what the validation converts to), the class of the largest
    leaf value; LDA's `argmax(X @ coef_.T + intercept_)`. Anything else goes through `predict`.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.tree import DecisionTreeClassifier

    if isinstance(model, DecisionTreeClassifier) and model.n_outputs_ == 1:
        tree, classes = model.tree_, model.classes_

        def tree_labels(features: Features) -> npt.NDArray[Any]:
            leaves = tree.predict(np.ascontiguousarray(features, dtype=np.float32))
            return classes.take(np.argmax(leaves, axis=1), axis=0)  # type: ignore[no-any-return]

        return tree_labels
    if (
        isinstance(model, LinearDiscriminantAnalysis)
        and model.coef_.ndim == 2
        and model.coef_.shape[0] == len(model.classes_) > 2
    ):
        coef_t, intercept, classes = model.coef_.T, model.intercept_, model.classes_

        def linear_labels(features: Features) -> npt.NDArray[Any]:
            return classes.take(  # type: ignore[no-any-return]
                np.argmax(features @ coef_t + intercept, axis=1), axis=0
            )

        return linear_labels
    return None


def _agrees(direct: LabelFunction, loaded: LoadedModel) -> bool:
    """Whether the direct path gives exactly `predict`'s labels on varied rows."""
    rng = np.random.default_rng(0)
    rows = np.vstack(
        [
            rng.uniform(0.0, 1.0, size=(512, loaded.n_features)),
            rng.uniform(-1.0, 2.0, size=(64, loaded.n_features)),
            np.zeros((1, loaded.n_features)),
            np.ones((1, loaded.n_features)),
        ]
    )
    with sklearn.config_context(assume_finite=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = loaded.bundle.model.predict(rows)
    try:
        return bool(np.array_equal(direct(rows), expected))
    except Exception:
        return False


def _smoke(loaded: LoadedModel, where: str) -> None:
    """A real prediction on scaled-range rows: the model runs and answers in its own terms."""
    rows = np.vstack(
        [np.zeros(loaded.n_features), np.full(loaded.n_features, 0.5), np.ones(loaded.n_features)]
    )
    try:
        with sklearn.config_context(assume_finite=True), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            prediction = loaded.predict(rows, probabilities=True)
    except Exception as error:
        raise ModelLoadError(f"{where}: smoke prediction failed: {error!r}") from error
    probabilities = prediction.probabilities
    assert probabilities is not None
    if len(prediction.labels) != len(rows) or not set(map(str, prediction.labels)) <= set(
        loaded.classes
    ):
        raise ModelLoadError(f"{where}: smoke prediction gave labels outside its classes")
    if probabilities.shape != (len(rows), len(loaded.classes)) or not np.allclose(
        probabilities.sum(axis=1), 1.0
    ):
        raise ModelLoadError(f"{where}: smoke prediction gave malformed probabilities")
