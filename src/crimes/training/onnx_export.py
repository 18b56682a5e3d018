"""The ONNX form of a fitted classifier: what the model services run (onnxruntime, never
scikit-learn).

A form is kept only when it gives exactly the classifier's labels on every row it is checked on
(the test split and the reference's example record). A tree is exported on float32 inputs,
which is what scikit-learn's trees compute on anyway; any other model is tried on float32 (half
the bytes on the wire, faster) and, when one label differs, on float64.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from crimes import contract
from crimes.registry import Tag, artifacts, onnx_form, signing
from crimes.training.settings import TrainingSettings
from crimes.transformation.document import TransformationDocument
from crimes.transformation.lookup import LookupTransformer

# The ONNX operator sets the services' onnxruntime runs (opset 18, ai.onnx.ml 3).
TARGET_OPSET: Final = {"": 18, "ai.onnx.ml": 3}
LOGGED_NAME: Final = "onnx"


class ExportMismatch(RuntimeError):
    """No ONNX form gives the classifier's own labels: the version is not registered."""


@dataclass(frozen=True)
class Exported:
    data: bytes
    datatype: str  # FP32 | FP64: what the ONNX form computes on
    rows_compared: int


def export(model: Any, n_features: int, datatype: str) -> bytes:
    """The classifier as an ONNX model: input `features` [N, n_features] of `datatype`,
    outputs `label` and `probabilities` (no ZipMap), with the project's metadata."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    tensor_type = FloatTensorType if datatype == "FP32" else DoubleTensorType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = to_onnx(
            model,
            initial_types=[(onnx_form.INPUT, tensor_type([None, n_features]))],
            target_opset=TARGET_OPSET,
            options={id(model): {"zipmap": False}},
        )
    metadata = {
        onnx_form.CLASSES: json.dumps([str(c) for c in model.classes_]),
        onnx_form.MODEL_CLASS: type(model).__name__,
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return bytes(proto.SerializeToString())


def reference_rows(transformation: TransformationDocument) -> npt.NDArray[np.float64]:
    """The reference's example record, as this transformation makes it."""
    matrix, _ = LookupTransformer(transformation).transform([dict(contract.EXAMPLE_RECORD)])
    return matrix


def export_checked(model: Any, rows: npt.NDArray[np.float64]) -> Exported:
    """The first ONNX form whose labels equal the classifier's on every one of `rows`."""
    with warnings.catch_warnings():
        # A classifier fitted on named columns, given the same columns as an array.
        warnings.simplefilter("ignore", UserWarning)
        expected = np.asarray(model.predict(rows)).astype(str)
    datatypes = ("FP32",) if type(model).__name__ == "DecisionTreeClassifier" else ("FP32", "FP64")
    differences: list[str] = []
    for datatype in datatypes:
        data = export(model, rows.shape[1], datatype)
        labels = onnx_form.OnnxClassifier(data, "export check").predict(rows, False).labels
        differing = int(np.count_nonzero(labels.astype(str) != expected))
        if differing == 0:
            return Exported(data, datatype, len(rows))
        differences.append(f"{datatype}: {differing} of {len(rows)} labels differ")
    raise ExportMismatch(
        f"no ONNX form of the {type(model).__name__} gives its labels ({'; '.join(differences)})"
    )


def check_rows(
    rows: npt.NDArray[np.float64], transformation: TransformationDocument
) -> npt.NDArray[np.float64]:
    """The rows an export is checked on: these, and the reference's example record."""
    return np.vstack([np.asarray(rows, dtype=np.float64), reference_rows(transformation)])


def log_form(name: str, version: str, exported: Exported, transformation_version: str) -> str:
    """Log the form with MLflow's onnx flavor in the active run, and tag the version with
    where it is, its files' SHA-256, the rows it was checked on and, where the training holds
    the signing key, its signature (registry.signing); its URI."""
    import mlflow
    import mlflow.onnx
    import onnx

    info = mlflow.onnx.log_model(
        onnx.load_model_from_string(exported.data),
        name=LOGGED_NAME,
        pip_requirements=[f"onnxruntime=={_version('onnxruntime')}"],
        save_as_external_data=False,
    )
    uri = f"models:/{info.model_id}"
    tracking_uri = mlflow.get_tracking_uri()
    with tempfile.TemporaryDirectory(prefix="crimes-onnx-") as scratch:
        folder = artifacts.download_model_files(tracking_uri, uri, Path(scratch))
        digest = artifacts.directory_sha256(folder)
    client = mlflow.MlflowClient()
    tags = {
        Tag.ONNX_MODEL: uri,
        Tag.ONNX_SHA256: digest,
        Tag.ONNX_ROWS_COMPARED: str(exported.rows_compared),
    }
    key = TrainingSettings().signing_key
    if key is not None:
        run_id = client.get_model_version(name, version).run_id
        if not run_id:
            raise ExportMismatch(f"{name} version {version} names no run: nothing to sign")
        statement = signing.Statement(name, run_id, digest, transformation_version)
        tags[Tag.ONNX_SIGNATURE] = signing.sign(
            signing.private_key(key.get_secret_value()), statement
        )
    for tag, value in tags.items():
        client.set_model_version_tag(name, version, tag, value)
    mlflow.log_metric("onnx_rows_compared", exported.rows_compared)
    return uri


def attach(
    name: str,
    version: str,
    model: Any,
    rows: npt.NDArray[np.float64],
    transformation: TransformationDocument,
) -> Exported:
    """Export, check on `rows` and the reference example, and log the form on the version
    (in the active run)."""
    exported = export_checked(model, check_rows(rows, transformation))
    log_form(name, version, exported, transformation.version)
    return exported


def _version(package: str) -> str:
    from importlib import metadata

    return metadata.version(package)


class VersionNotExportable(RuntimeError):
    """An existing version whose ONNX form cannot be made (no such version, no test split)."""


def add_to_version(name: str, version: str, lake: Any) -> tuple[str, Exported | None]:
    """Give a version registered before the services ran ONNX its ONNX form, checked on its
    own test split (read from the lake by the dataset it was trained on) and the reference
    example, as the training does. Idempotent: a version that has one is left alone (None)."""
    import mlflow

    from crimes import registry
    from crimes.lake import datasets
    from crimes.transformation import document

    client = mlflow.MlflowClient()
    found = client.get_model_version(name, version)
    tags = dict(found.tags or {})
    if tags.get(Tag.ONNX_MODEL):
        return str(tags[Tag.ONNX_MODEL]), None
    if not found.run_id or not tags.get(Tag.DATASET) or not tags.get(Tag.YEAR):
        raise VersionNotExportable(
            f"{name} version {version} names no run, dataset or year: its test split is unknown"
        )
    tracking_uri = mlflow.get_tracking_uri()
    model = artifacts.load_version_model(tracking_uri, name, version)
    transformation = document.loads(
        artifacts.version_artifact(tracking_uri, name, version, registry.TRANSFORMATION_ARTIFACT),
        expected_version=tags.get(Tag.TRANSFORMATION_VERSION),
    )
    try:
        final = datasets.load_final(lake, int(tags[Tag.YEAR]), tags[Tag.DATASET])
    except Exception as error:
        raise VersionNotExportable(
            f"{name} version {version}: its test split ({tags[Tag.DATASET]}) is not readable "
            f"in the lake: {error}"
        ) from error
    exported = export_checked(model, check_rows(final.X_test.to_numpy(), transformation))
    with mlflow.start_run(run_id=found.run_id):
        uri = log_form(name, version, exported, transformation.version)
    return uri, exported
