"""The ONNX form of a registered version: what it must look like, and how it runs.

The training exports each classifier with skl2onnx (`crimes.training.onnx_export`); the model
services run the form with onnxruntime, never scikit-learn. A form is taken only when its
inputs, outputs and metadata are exactly the ones declared here: one input `features`
[N, F] (float32 or float64), the outputs `label` [N] (text) and `probabilities` [N, classes],
and the classes (FBI codes) in its metadata, in the column order of `probabilities`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import yaml

from crimes.registry import onnx_structure

INPUT: Final = "features"
LABEL_OUTPUT: Final = "label"
PROBABILITIES_OUTPUT: Final = "probabilities"
# The form's own metadata (ONNX metadata_props).
CLASSES: Final = "crimes.classes"
MODEL_CLASS: Final = "crimes.model_class"
MODEL_FILE: Final = "model.onnx"

# The wire datatype of each input element type the services accept.
INPUT_DATATYPES: Final = {"tensor(float)": "FP32", "tensor(double)": "FP64"}
_NUMPY: Final[dict[str, np.dtype[Any]]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}


class FormRefused(ValueError):
    """An ONNX form that is not loaded: unreadable, or not shaped as declared."""


@dataclass(frozen=True)
class Prediction:
    labels: npt.NDArray[Any]
    probabilities: npt.NDArray[np.floating[Any]] | None


class OnnxClassifier:
    """One ONNX form in an onnxruntime session, checked against the declared shape."""

    def __init__(self, data: bytes, source: str, threads: int = 1) -> None:
        import onnxruntime

        # Our own checks first: the runtime is never given a graph that fails them.
        checked_structure(data, source)

        options = onnxruntime.SessionOptions()
        # One request's rows on one core: replicas scale out, and a second intra-op thread
        # made a single row about ten times slower here (cross-core wake-ups).
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(
                data, options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise FormRefused(f"{source}: not a loadable ONNX model ({error})") from error
        self.datatype, self.n_features = _checked_input(self.session, source)
        self.dtype: np.dtype[Any] = _NUMPY[self.datatype]
        _check_outputs(self.session, source)
        declared = self.session.get_modelmeta().custom_metadata_map
        self.classes = _declared_classes(declared.get(CLASSES), source)
        self.model_class = str(declared.get(MODEL_CLASS) or "onnx")

    def predict(self, features: npt.NDArray[Any], probabilities: bool) -> Prediction:
        inputs = {INPUT: np.ascontiguousarray(features, dtype=self.dtype)}
        if not probabilities:
            (labels,) = self.session.run([LABEL_OUTPUT], inputs)
            return Prediction(labels=labels, probabilities=None)
        labels, scores = self.session.run([LABEL_OUTPUT, PROBABILITIES_OUTPUT], inputs)
        # As the form computes them (float32 for most): widened only where a client asks for
        # them (the protocol's FP64 output), never for the confidence alone.
        return Prediction(labels=labels, probabilities=np.asarray(scores))


def checked_structure(data: bytes, source: str) -> None:
    """The form's structure, as `onnx_structure` requires it, read with the onnx package
    (protobuf only: nothing runs)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise FormRefused(f"{source}: not a loadable ONNX model ({error})") from error
    inputs = [i for i in model.graph.input if i.name == INPUT]
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    width = dims[1].dim_value if len(dims) == 2 else 0
    if len(model.graph.input) != 1 or width < 1:
        raise FormRefused(f"{source}: its input is not one '{INPUT}' of [N, features]")
    declared = {p.key: p.value for p in model.metadata_props}
    classes = _declared_classes(declared.get(CLASSES), source)
    try:
        onnx_structure.check(model, width, len(classes))
    except onnx_structure.StructureRefused as error:
        raise FormRefused(f"{source}: refused: {error}") from error


def _checked_input(session: Any, source: str) -> tuple[str, int]:
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [INPUT]:
        raise FormRefused(f"{source}: its inputs are {[i.name for i in inputs]}, not ['{INPUT}']")
    tensor = inputs[0]
    if tensor.type not in INPUT_DATATYPES:
        raise FormRefused(f"{source}: input '{INPUT}' is {tensor.type}, not float or double")
    shape = list(tensor.shape)
    if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 1:
        raise FormRefused(f"{source}: input '{INPUT}' has shape {shape}, not [N, features]")
    return INPUT_DATATYPES[tensor.type], int(shape[1])


def _check_outputs(session: Any, source: str) -> None:
    found = {o.name: (o.type, len(o.shape)) for o in session.get_outputs()}
    expected_types = {LABEL_OUTPUT: {"tensor(string)"}, PROBABILITIES_OUTPUT: set(INPUT_DATATYPES)}
    if sorted(found) != sorted(expected_types):
        raise FormRefused(
            f"{source}: its outputs are {sorted(found)}, not "
            f"['{LABEL_OUTPUT}', '{PROBABILITIES_OUTPUT}']"
        )
    for name, ranks in ((LABEL_OUTPUT, 1), (PROBABILITIES_OUTPUT, 2)):
        kind, rank = found[name]
        if kind not in expected_types[name] or rank != ranks:
            raise FormRefused(f"{source}: output '{name}' is {kind} of rank {rank}")


def _declared_classes(text: str | None, source: str) -> tuple[str, ...]:
    try:
        classes = json.loads(text or "")
    except ValueError as error:
        raise FormRefused(f"{source}: no '{CLASSES}' in its metadata") from error
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise FormRefused(f"{source}: '{CLASSES}' must be a list of FBI codes as text")
    return tuple(classes)


def logged_file(model_dir: Path, source: str) -> bytes:
    """The model file of an MLflow onnx model directory (its MLmodel read as plain YAML)."""
    try:
        described = yaml.safe_load((Path(model_dir) / "MLmodel").read_text())
        flavor = described["flavors"]["onnx"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as error:
        raise FormRefused(f"{source}: no onnx flavor in its MLmodel ({error})") from error
    name = str(flavor.get("data", MODEL_FILE))
    path = (Path(model_dir) / name).resolve()
    if not path.is_relative_to(Path(model_dir).resolve()) or not path.is_file():
        raise FormRefused(f"{source}: no model file {name!r} in the model's directory")
    return path.read_bytes()
