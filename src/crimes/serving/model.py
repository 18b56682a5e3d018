"""A loaded, checked model version: what the server predicts with, and what it reports.

A `LoadedModel` is built from a `ModelBundle` (wherever that came from) only after the checks
pass: its ONNX form has the declared inputs and outputs (`registry.onnx_form`), takes as many
features as its transformation makes, its classes are the bundle's, and a smoke prediction
works. It is never mutated afterwards, so swapping one for another is a single reference
assignment.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from crimes.protocol import inference
from crimes.registry import Tag
from crimes.registry.bundles import ModelBundle
from crimes.registry.onnx_form import FormRefused, OnnxClassifier, Prediction
from crimes.serving.errors import InvalidInput, ModelLoadError, PreconditionFailed
from crimes.transformation.lookup import LookupTransformer

# Triton's name for the platform: the services run ONNX forms with onnxruntime.
PLATFORM: Final = "onnxruntime_onnx"
Features = inference.Features


class Source(enum.StrEnum):
    """Where the served copy of a model was read from (reported in metadata and logs)."""

    MLFLOW = "mlflow"
    LOCAL_COPY = "local_copy"
    LAKE = "lake"
    BUNDLE_PATH = "bundle_path"


@dataclass(frozen=True, eq=False)
class LoadedModel:
    bundle: ModelBundle
    source: Source
    location: str
    classifier: OnnxClassifier = field(repr=False)
    feature_names: tuple[str, ...]
    alias: str = ""
    loaded_at: float = field(default_factory=time.time)
    # The class labels as BYTES tensor elements, encoded once.
    labels: inference.Labels = field(default_factory=lambda: inference.Labels(()), repr=False)
    # The version's own transformation, for records sent raw (built from its document).
    transformer: LookupTransformer | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def classes(self) -> tuple[str, ...]:
        return self.classifier.classes

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
        return self.classifier.model_class

    @property
    def input_datatype(self) -> str:
        """FP32 or FP64: what the form computes on (FP64 features are cast to it)."""
        return self.classifier.datatype

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
        self, columns: Mapping[str, Sequence[Any]], rows: int
    ) -> tuple[Features, list[list[str]]]:
        """Validated records through this version's own transformation, in what its form
        computes on; each row's unknown categories."""
        assert self.transformer is not None, "prepare() builds it"
        return self.transformer.transform_columns(columns, rows, self.classifier.dtype)

    def predict(self, features: Features, probabilities: bool) -> Prediction:
        return self.classifier.predict(features, probabilities)


def prepare(
    bundle: ModelBundle, source: Source, location: str, *, alias: str = "", threads: int = 1
) -> LoadedModel:
    """Check a bundle and make it servable; ModelLoadError says what is wrong with it."""
    where = f"model {bundle.name} version {bundle.version} from {source} ({location})"
    try:
        classifier = OnnxClassifier(bundle.model, where, threads)
    except FormRefused as error:
        raise ModelLoadError(str(error)) from error
    if "classes" in bundle.metadata and list(bundle.metadata["classes"]) != list(
        classifier.classes
    ):
        raise ModelLoadError(f"{where}: metadata classes differ from the model's")
    actual = bundle.transformation.version
    if actual != bundle.transformation_version:
        raise ModelLoadError(
            f"{where}: its transformation is {actual}, the version is tagged "
            f"{bundle.transformation_version}"
        )
    columns = list(bundle.transformation.output_columns)
    named = [str(c) for c in bundle.metadata.get("feature_names", columns)]
    if named != columns:
        raise ModelLoadError(
            f"{where}: input columns of the metadata differ from the transformation's output "
            f"({len(named)} vs {len(columns)} columns)"
        )
    if classifier.n_features != len(columns):
        raise ModelLoadError(
            f"{where}: the model takes {classifier.n_features} features, "
            f"the transformation makes {len(columns)}"
        )
    loaded = LoadedModel(
        bundle=bundle,
        source=source,
        location=location,
        classifier=classifier,
        feature_names=tuple(columns),
        alias=alias,
        labels=inference.Labels(classifier.classes),
        transformer=LookupTransformer(bundle.transformation),
    )
    _smoke(loaded, where)
    return loaded


def _smoke(loaded: LoadedModel, where: str) -> None:
    """A real prediction on scaled-range rows: the model runs and answers in its own terms."""
    rows = np.vstack(
        [np.zeros(loaded.n_features), np.full(loaded.n_features, 0.5), np.ones(loaded.n_features)]
    )
    try:
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
        probabilities.sum(axis=1), 1.0, atol=1e-4
    ):
        raise ModelLoadError(f"{where}: smoke prediction gave malformed probabilities")
