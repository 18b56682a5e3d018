"""Open Inference Protocol messages <-> numpy arrays and labels, for both sides of a call.

The model services decode requests and encode responses; their clients (the gateway, the tests,
the benchmarks) encode requests and decode responses, with the same names. This module depends
on neither side: a model service's own part (what it says about its loaded model) stays in
`crimes.serving`, and gives this module plain values.

The model's one input is `features`, a FP64 (or FP32) tensor [N, F] of transformed features,
with the request parameter `transformation_version` naming the transformation that made them.
Its outputs are `fbi_code`, BYTES [N] (returned when no output is named), `probabilities`,
FP64 [N, classes], `confidence`, FP32 [N], each row's top probability, and `fbi_code_index`,
INT32 [N], the labels as indices into the classes it names (the last three only when asked
for). Data may come
typed (`contents`) or raw (`raw_input_contents`); the response uses the same form as the request,
because clients such as tritonclient send raw data and read back raw data only.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from crimes import contract
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.protocol import records
from crimes.protocol.tensors import (
    CONFIDENCE,
    DATATYPES,
    INPUT,
    LABEL_INDEX,
    LABELS,
    MATRIX_DATATYPES,
    PROBABILITIES,
    RECORD_DATATYPES,
    Datatype,
    InvalidInput,
    ask_outputs,
    check_raw_size,
    join_bytes,
    length_prefixed,
    requested_outputs,
    split_bytes,
    typed_values,
    unsupported_parameter,
)
from crimes.registry import Tag

__all__ = [
    "CONFIDENCE",
    "INPUT",
    "LABELS",
    "LABEL_INDEX",
    "PROBABILITIES",
    "RECORD_DATATYPES",
    "InvalidInput",
    "join_bytes",
    "split_bytes",
]

TRANSFORMATION_VERSION: Final = Tag.TRANSFORMATION_VERSION

# Model parameters in ModelMetadata (string values unless noted).
RUN_ID: Final = "run_id"
CLASSES: Final = "classes"  # JSON list, the column order of `probabilities`
FEATURE_NAMES: Final = "feature_names"  # JSON list, the column order of `features`
SOURCE: Final = "source"  # mlflow | local_copy | lake | bundle_path
LOCATION: Final = "location"
ALIAS: Final = "alias"
MODEL_CLASS: Final = "model_class"
LOADED_AT: Final = "loaded_at"
MAX_BATCH_ROWS: Final = "max_batch_rows"  # int64

INPUT_FORMS: Final = "input_forms"  # JSON: which inputs make each of the two request forms

# Features as they travel: FP64, or FP32 (kept as float32 through decoding).
Features = npt.NDArray[np.float64] | npt.NDArray[np.float32]
FloatMatrix = npt.NDArray[np.float64]


# Made for every call: slots and not frozen, as a frozen dataclass's __init__ costs about
# six times more (it sets each field through object.__setattr__).
@dataclass(slots=True)
class InferInput:
    """A decoded inference request, checked against the protocol (not yet against a model)."""

    features: Features
    transformation_version: str | None
    outputs: tuple[str, ...]
    raw: bool


def parameter_value(parameter: pb.InferParameter) -> bool | int | float | str | None:
    kind = parameter.WhichOneof("parameter_choice")
    return None if kind is None else getattr(parameter, kind)


def set_parameter(target: pb.InferParameter, value: bool | int | float | str) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = value


def parameters_dict(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {key: parameter_value(value) for key, value in parameters.items()}


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def decode_infer_request(request: pb.ModelInferRequest, max_rows: int) -> InferInput:
    """The request's features and options; InvalidInput names what is malformed."""
    # Each read of a protobuf field makes a new Python object: each is read once.
    inputs = request.inputs
    if len(inputs) != 1:
        raise InvalidInput(
            f"request has {len(inputs)} input tensors: send exactly one, "
            f"'{INPUT}', FP64 of shape [N, features], or the records' features, one tensor "
            "each (see ModelMetadata)"
        )
    tensor = inputs[0]
    name = tensor.name
    if name != INPUT:
        raise InvalidInput(
            f"unknown input tensor '{name}': the model's inputs are '{INPUT}' or the "
            "records' features (see ModelMetadata)"
        )
    return _decoded_matrix(request, tensor, max_rows)


def _decoded_matrix(
    request: pb.ModelInferRequest, tensor: pb.ModelInferRequest.InferInputTensor, max_rows: int
) -> InferInput:
    """The request whose one input is `tensor`, the features' matrix."""
    unsupported_parameter(tensor.parameters, f"input '{INPUT}'")
    datatype = tensor.datatype
    if datatype not in MATRIX_DATATYPES:
        raise InvalidInput(
            f"input '{INPUT}': datatype '{datatype}' is not supported, use FP64 (or FP32)"
        )
    rows, columns = _matrix_shape(list(tensor.shape), max_rows)
    raw_contents = request.raw_input_contents
    array = _matrix_data(raw_contents, tensor, DATATYPES[datatype], rows * columns)
    # The wire dtype is kept: a tree's FP32 features are computed on as float32 anyway.
    features: Features = array.reshape(rows, columns)
    return InferInput(
        features=features,
        transformation_version=_transformation_version(request),
        outputs=requested_outputs(request.outputs),
        raw=len(raw_contents) > 0,
    )


def _matrix_shape(shape: list[int], max_rows: int) -> tuple[int, int]:
    if len(shape) != 2:
        raise InvalidInput(
            f"input '{INPUT}': shape {_shape_text(shape)} has {len(shape)} dimensions, "
            "expected 2: [N, features]"
        )
    rows, columns = shape
    if rows < 0 or columns < 0:
        raise InvalidInput(f"input '{INPUT}': shape {_shape_text(shape)} has a negative size")
    if rows == 0:
        raise InvalidInput(f"input '{INPUT}': empty batch (shape {_shape_text(shape)})")
    if rows > max_rows:
        raise InvalidInput(
            f"input '{INPUT}': batch of {rows} rows is over the limit of {max_rows} rows"
        )
    if columns == 0:
        raise InvalidInput(f"input '{INPUT}': shape {_shape_text(shape)} has no features")
    return rows, columns


def _matrix_data(
    raw_contents: Sequence[bytes],
    tensor: pb.ModelInferRequest.InferInputTensor,
    datatype: Datatype,
    count: int,
) -> npt.NDArray[Any]:
    """The one input's `count` elements, raw or typed, in its wire dtype."""
    entries = len(raw_contents)
    if entries == 0:
        return np.asarray(typed_values(INPUT, tensor, count), dtype=datatype.dtype)
    if entries != 1:
        raise InvalidInput(f"raw_input_contents has {entries} entries for 1 input tensor")
    if tensor.HasField("contents"):
        raise InvalidInput(
            f"input '{INPUT}' has both contents and raw_input_contents: use one of them"
        )
    data = raw_contents[0]
    check_raw_size(INPUT, data, datatype, count)
    return np.frombuffer(data, dtype=datatype.dtype)


def _transformation_version(request: pb.ModelInferRequest) -> str | None:
    parameters = request.parameters
    if TRANSFORMATION_VERSION not in parameters:
        return None
    parameter = parameters[TRANSFORMATION_VERSION]
    kind = parameter.WhichOneof("parameter_choice")
    if kind != "string_param":
        raise InvalidInput(
            f"request parameter '{TRANSFORMATION_VERSION}' must be a string_param, "
            f"got {kind or 'no value'}"
        )
    version = str(parameter.string_param)
    if not version:
        raise InvalidInput(f"request parameter '{TRANSFORMATION_VERSION}' is empty")
    return version


def decode_request(
    request: pb.ModelInferRequest, max_rows: int
) -> InferInput | records.RecordsInput:
    """A ModelInfer request in either input form: raw records (a tensor per feature), or the
    features' matrix; InvalidInput names what is malformed."""
    inputs = request.inputs
    if len(inputs) == 1:
        tensor = inputs[0]
        if tensor.name == INPUT:  # the matrix: the gateway's form, read once
            return _decoded_matrix(request, tensor, max_rows)
    if records.is_record_request(request):
        return records.decode(request, max_rows)
    return decode_infer_request(request, max_rows)


class Labels:
    """A model's class labels as BYTES tensor elements, encoded once (UTF-8, and length-prefixed
    for raw contents), so an answer is a lookup per row."""

    def __init__(self, classes: Iterable[str]) -> None:
        self.classes = tuple(classes)
        self.classes_json = json.dumps(list(self.classes))
        self._elements = {c: c.encode() for c in self.classes}
        self._raw = {c: length_prefixed(e) for c, e in self._elements.items()}
        self._index = {c: i for i, c in enumerate(self.classes)}

    def indices(self, labels: Sequence[str] | npt.NDArray[Any]) -> npt.NDArray[np.int32]:
        """Each label's index into `classes`."""
        return np.fromiter(map(self._index.__getitem__, labels), dtype="<i4", count=len(labels))

    def elements(self, labels: Iterable[str]) -> list[bytes]:
        return [self._elements[label] for label in labels]

    def raw(self, labels: Iterable[str]) -> bytes:
        return b"".join([self._raw[label] for label in labels])


@dataclass(slots=True)  # per call: see InferInput
class Answer:
    """What a model answered for one request, in the protocol's terms."""

    model_name: str
    model_version: str
    transformation_version: str
    labels: npt.NDArray[Any]
    probabilities: npt.NDArray[np.floating[Any]] | None  # float32 or float64, as computed
    encoding: Labels


class Requested(Protocol):
    """What a decoded request (matrix or records) says about the answer it wants."""

    @property
    def outputs(self) -> tuple[str, ...]: ...

    @property
    def raw(self) -> bool: ...


def encode_infer_response(
    request: pb.ModelInferRequest, decoded: Requested, answer: Answer
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=answer.model_name, model_version=answer.model_version, id=request.id
    )
    response.parameters[TRANSFORMATION_VERSION].string_param = answer.transformation_version
    rows = len(answer.labels)
    for name in decoded.outputs:
        output = response.outputs.add()
        output.name = name
        if name == LABELS:
            output.datatype = "BYTES"
            output.shape.append(rows)
            if decoded.raw:
                response.raw_output_contents.append(answer.encoding.raw(answer.labels))
            else:
                output.contents.bytes_contents.extend(answer.encoding.elements(answer.labels))
        elif name == LABEL_INDEX:
            indices = answer.encoding.indices(answer.labels)
            output.datatype = "INT32"
            output.shape.append(rows)
            output.parameters[CLASSES].string_param = answer.encoding.classes_json
            if decoded.raw:
                response.raw_output_contents.append(indices.tobytes())
            else:
                output.contents.int_contents.extend(indices.tolist())
        elif name == CONFIDENCE:
            assert answer.probabilities is not None, "the confidence needs the probabilities"
            confidence = answer.probabilities.max(axis=1).astype("<f4")
            output.datatype = "FP32"
            output.shape.append(rows)
            if decoded.raw:
                response.raw_output_contents.append(confidence.tobytes())
            else:
                output.contents.fp32_contents.extend(confidence.tolist())
        else:
            probabilities = answer.probabilities
            assert probabilities is not None, "probabilities were requested"
            output.datatype = "FP64"
            output.shape.extend(probabilities.shape)
            output.parameters[CLASSES].string_param = answer.encoding.classes_json
            if decoded.raw:
                response.raw_output_contents.append(probabilities.astype("<f8").tobytes())
            else:
                output.contents.fp64_contents.extend(probabilities.ravel().tolist())
    return response


@dataclass(frozen=True)
class ModelInfo:
    """What ModelMetadata says about the served model, beyond its tensors."""

    name: str
    version: str
    platform: str
    n_features: int
    transformation_version: str
    run_id: str
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    source: str
    location: str
    alias: str
    model_class: str
    loaded_at: str
    max_batch_rows: int
    # What the model computes on (FP32 or FP64): the features' cheapest exact wire form.
    input_datatype: str = "FP64"
    # Whether it answers the labels as indices too (LABEL_INDEX): older services do not.
    label_index: bool = False


def encode_model_metadata(info: ModelInfo) -> pb.ModelMetadataResponse:
    response = pb.ModelMetadataResponse(
        name=info.name, versions=[info.version], platform=info.platform
    )
    response.inputs.add(name=INPUT, datatype=info.input_datatype, shape=[-1, info.n_features])
    # The other form: a raw record, one tensor per feature (optional ones may be left out).
    for spec in contract.FEATURE_SPECS:
        response.inputs.add(name=spec.name, datatype=RECORD_DATATYPES[spec.kind][0], shape=[-1])
    response.outputs.add(name=LABELS, datatype="BYTES", shape=[-1])
    response.outputs.add(name=PROBABILITIES, datatype="FP64", shape=[-1, len(info.classes)])
    response.outputs.add(name=CONFIDENCE, datatype="FP32", shape=[-1])
    if info.label_index:
        response.outputs.add(name=LABEL_INDEX, datatype="INT32", shape=[-1])
    values: dict[str, bool | int | float | str] = {
        TRANSFORMATION_VERSION: info.transformation_version,
        RUN_ID: info.run_id,
        CLASSES: json.dumps(list(info.classes)),
        FEATURE_NAMES: json.dumps(list(info.feature_names)),
        SOURCE: info.source,
        LOCATION: info.location,
        ALIAS: info.alias,
        MODEL_CLASS: info.model_class,
        LOADED_AT: info.loaded_at,
        MAX_BATCH_ROWS: info.max_batch_rows,
        INPUT_FORMS: json.dumps(
            {
                "matrix": [INPUT],
                "records": list(contract.FEATURES),
                "records_optional": [s.name for s in contract.FEATURE_SPECS if s.nullable],
            }
        ),
    }
    for key, value in values.items():
        set_parameter(response.parameters[key], value)
    return response


def decode_model_metadata(response: pb.ModelMetadataResponse) -> ModelInfo:
    """The served model's description; a parameter a server left out reads as empty."""
    parameters = parameters_dict(response.parameters)

    def text(key: str) -> str:
        return str(parameters.get(key) or "")

    def names(key: str) -> tuple[str, ...]:
        return tuple(str(n) for n in json.loads(text(key) or "[]"))

    tensor = next((t for t in response.inputs if t.name == INPUT), None)
    features = list(tensor.shape) if tensor is not None else [-1, 0]
    return ModelInfo(
        name=response.name,
        version=response.versions[0] if response.versions else "",
        platform=response.platform,
        n_features=int(features[-1]),
        transformation_version=text(TRANSFORMATION_VERSION),
        run_id=text(RUN_ID),
        classes=names(CLASSES),
        feature_names=names(FEATURE_NAMES),
        source=text(SOURCE),
        location=text(LOCATION),
        alias=text(ALIAS),
        model_class=text(MODEL_CLASS),
        loaded_at=text(LOADED_AT),
        max_batch_rows=int(parameters.get(MAX_BATCH_ROWS) or 0),
        input_datatype=tensor.datatype
        if tensor is not None and tensor.datatype in MATRIX_DATATYPES
        else "FP64",
        label_index=any(output.name == LABEL_INDEX for output in response.outputs),
    )


# --- the client side -------------------------------------------------------------------------


def infer_request(
    model_name: str,
    features: npt.ArrayLike,
    transformation_version: str,
    *,
    probabilities: bool = False,
    confidence: bool = False,
    raw: bool = True,
    request_id: str = "",
    datatype: str = "FP64",
    label_index: bool = False,
) -> pb.ModelInferRequest:
    """A ModelInfer request for transformed features ([N, F], FP64 or FP32); the labels come
    back as indices when `label_index` (a service that advertises LABEL_INDEX)."""
    if datatype not in MATRIX_DATATYPES:
        raise ValueError(f"datatype must be one of {MATRIX_DATATYPES}, got {datatype}")
    matrix = np.ascontiguousarray(features, dtype=DATATYPES[datatype].dtype)
    if matrix.ndim != 2:
        raise ValueError(f"features must be a 2-D matrix, got shape {matrix.shape}")
    request = pb.ModelInferRequest(model_name=model_name, id=request_id)
    request.parameters[TRANSFORMATION_VERSION].string_param = transformation_version
    tensor = request.inputs.add(name=INPUT, datatype=datatype, shape=list(matrix.shape))
    if raw:
        request.raw_input_contents.append(matrix.tobytes())
    else:
        getattr(tensor.contents, DATATYPES[datatype].contents).extend(matrix.ravel().tolist())
    ask_outputs(
        request, probabilities=probabilities, confidence=confidence, label_index=label_index
    )
    return request


@dataclass(frozen=True, slots=True)
class IndexedLabels:
    """Labels as a service sent them: indices into its classes, and those classes (the JSON
    text of the output's `classes` parameter, as sent). The prediction log keeps them so,
    without a Python string per row."""

    indices: npt.NDArray[np.int32]
    classes_json: str

    def part(self, rows: slice) -> IndexedLabels:
        return IndexedLabels(self.indices[rows], self.classes_json)


@dataclass(slots=True)  # per call: see InferInput
class InferOutput:
    model_version: str
    transformation_version: str
    labels: list[str]
    probabilities: FloatMatrix | None
    classes: tuple[str, ...] | None
    confidence: npt.NDArray[np.float32] | None = None
    indexed: IndexedLabels | None = None  # the labels as sent, when sent as indices


def decode_infer_response(response: pb.ModelInferResponse) -> InferOutput:
    labels: list[str] = []
    probabilities: FloatMatrix | None = None
    classes: tuple[str, ...] | None = None
    confidence: npt.NDArray[np.float32] | None = None
    indexed: IndexedLabels | None = None
    # Each read of a protobuf field makes a new Python object: each is read once.
    raw_contents = response.raw_output_contents
    raw = len(raw_contents) > 0
    for index, output in enumerate(response.outputs):
        name = output.name
        if name == LABEL_INDEX:
            indices = (
                np.frombuffer(raw_contents[index], dtype="<i4")
                if raw
                else np.asarray(output.contents.int_contents, dtype=np.int32)
            )
            classes_json = output.parameters[CLASSES].string_param
            labels = indexed_labels(classes_json, indices)
            indexed = IndexedLabels(indices, classes_json)
        elif name == CONFIDENCE:
            confidence = (
                np.frombuffer(raw_contents[index], dtype="<f4")
                if raw
                else np.asarray(output.contents.fp32_contents, dtype=np.float32)
            )
        elif name == LABELS:
            if raw:
                labels = [b.decode() for b in split_bytes(raw_contents[index])]
            else:
                labels = [b.decode() for b in output.contents.bytes_contents]
        elif name == PROBABILITIES:
            data = (
                np.frombuffer(raw_contents[index], dtype="<f8")
                if raw
                else np.asarray(output.contents.fp64_contents, dtype=np.float64)
            )
            probabilities = data.reshape(list(output.shape)).astype(np.float64)
            classes = tuple(json.loads(output.parameters[CLASSES].string_param))
    return InferOutput(
        model_version=response.model_version,
        transformation_version=response.parameters[TRANSFORMATION_VERSION].string_param,
        labels=labels,
        probabilities=probabilities,
        classes=classes,
        confidence=confidence,
        indexed=indexed,
    )


@functools.lru_cache(maxsize=64)
def class_labels(classes_json: str) -> npt.NDArray[np.object_]:
    """The classes an answer names, as an array to take labels from (a version's classes
    are decoded once)."""
    classes = json.loads(classes_json)
    if not isinstance(classes, list):
        raise ValueError("the classes are not a list")
    return np.array([str(c) for c in classes], dtype=object)


def indexed_labels(classes_json: str, indices: npt.NDArray[np.int32]) -> list[str]:
    """Labels given as indices into the classes named (JSON); ValueError for an index out of
    them (a malformed answer)."""
    classes = class_labels(classes_json)
    if len(indices) <= _FEW_LABELS:  # numpy's calls cost more than a few rows' work
        positions = indices.tolist()
        if not all(0 <= i < len(classes) for i in positions):
            raise ValueError(f"a label index is outside the {len(classes)} classes")
        return [classes[i] for i in positions]
    if int(indices.min()) < 0 or int(indices.max()) >= len(classes):
        raise ValueError(f"a label index is outside the {len(classes)} classes")
    labels: list[str] = classes.take(indices).tolist()
    return labels


_FEW_LABELS: Final = 8
