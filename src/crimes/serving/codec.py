"""Open Inference Protocol messages <-> the model server's domain (numpy arrays, labels).

Both directions live here: the server decodes requests and encodes responses; a client (the
gateway, the tests, the benchmark) encodes requests and decodes responses with the same names.

The model's one input is `features`, a FP64 (or FP32) tensor [N, F] of transformed features,
with the request parameter `transformation_version` naming the transformation that made them.
Its outputs are `fbi_code`, BYTES [N] (returned when no output is named), and `probabilities`,
FP64 [N, classes] (only when asked for: it costs a second pass over the model). Data may come
typed (`contents`) or raw (`raw_input_contents`); the response uses the same form as the request,
because clients such as tritonclient send raw data and read back raw data only.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.registry import Tag
from crimes.serving.errors import InvalidInput
from crimes.serving.model import PLATFORM, FloatMatrix, LoadedModel, Prediction

INPUT: Final = "features"
LABELS: Final = "fbi_code"
PROBABILITIES: Final = "probabilities"
OUTPUTS: Final = (LABELS, PROBABILITIES)
DEFAULT_OUTPUTS: Final = (LABELS,)
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
TRANSFORMATION_URI: Final = "transformation_uri"
MAX_BATCH_ROWS: Final = "max_batch_rows"  # int64

_DTYPES: Final[dict[str, np.dtype[Any]]] = {"FP64": np.dtype("<f8"), "FP32": np.dtype("<f4")}
_CONTENTS: Final[dict[str, str]] = {"FP64": "fp64_contents", "FP32": "fp32_contents"}
# Protocol features some clients can ask for and this server does not offer.
_UNSUPPORTED_PARAMETERS: Final = {
    "shared_memory_region": "shared-memory tensors are not supported",
    "classification": "the classification extension is not supported",
}


@dataclass(frozen=True)
class InferInput:
    """A decoded inference request, checked against the protocol (not yet against a model)."""

    features: FloatMatrix
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
    if len(request.inputs) != 1:
        raise InvalidInput(
            f"request has {len(request.inputs)} input tensors: send exactly one, "
            f"'{INPUT}', FP64 of shape [N, features]"
        )
    tensor = request.inputs[0]
    if tensor.name != INPUT:
        raise InvalidInput(f"unknown input tensor '{tensor.name}': the model's input is '{INPUT}'")
    if tensor.parameters:
        for key, why in _UNSUPPORTED_PARAMETERS.items():
            if key in tensor.parameters:
                raise InvalidInput(f"input '{INPUT}': {why}")
    datatype = tensor.datatype
    if datatype not in _DTYPES:
        raise InvalidInput(
            f"input '{INPUT}': datatype '{datatype}' is not supported, use FP64 (or FP32)"
        )
    shape = list(tensor.shape)
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
    dtype = _DTYPES[datatype]
    count = rows * columns

    raw = len(request.raw_input_contents) > 0
    if raw:
        if len(request.raw_input_contents) != len(request.inputs):
            raise InvalidInput(
                f"raw_input_contents has {len(request.raw_input_contents)} entries for "
                f"{len(request.inputs)} input tensor"
            )
        if tensor.HasField("contents"):
            raise InvalidInput(
                f"input '{INPUT}' has both contents and raw_input_contents: use one of them"
            )
        data = request.raw_input_contents[0]
        if len(data) != count * dtype.itemsize:
            raise InvalidInput(
                f"input '{INPUT}': raw data has {len(data)} bytes, shape {_shape_text(shape)} "
                f"of {datatype} needs {count * dtype.itemsize}"
            )
        array = np.frombuffer(data, dtype=dtype)
    else:
        expected = _CONTENTS[datatype]
        misplaced = [f.name for f, _ in tensor.contents.ListFields() if f.name != expected]
        if misplaced:
            raise InvalidInput(
                f"input '{INPUT}' is {datatype} but has data in {', '.join(misplaced)}: "
                f"{datatype} data goes in {expected}"
            )
        values = getattr(tensor.contents, expected)
        if len(values) != count:
            raise InvalidInput(
                f"input '{INPUT}': {expected} has {len(values)} values, shape "
                f"{_shape_text(shape)} needs {count}"
            )
        array = np.asarray(values, dtype=dtype)
    features = array.reshape(rows, columns).astype(np.float64, copy=False)

    version: str | None = None
    if TRANSFORMATION_VERSION in request.parameters:
        parameter = request.parameters[TRANSFORMATION_VERSION]
        kind = parameter.WhichOneof("parameter_choice")
        if kind != "string_param":
            raise InvalidInput(
                f"request parameter '{TRANSFORMATION_VERSION}' must be a string_param, "
                f"got {kind or 'no value'}"
            )
        version = parameter.string_param
        if not version:
            raise InvalidInput(f"request parameter '{TRANSFORMATION_VERSION}' is empty")

    return InferInput(
        features=features,
        transformation_version=version,
        outputs=_requested_outputs(request.outputs),
        raw=raw,
    )


def _requested_outputs(
    requested: Iterable[pb.ModelInferRequest.InferRequestedOutputTensor],
) -> tuple[str, ...]:
    names: list[str] = []
    for output in requested:
        if output.name not in OUTPUTS:
            raise InvalidInput(
                f"unknown output '{output.name}': outputs are {', '.join(map(repr, OUTPUTS))}"
            )
        if output.name in names:
            raise InvalidInput(f"output '{output.name}' is requested twice")
        if output.parameters:
            for key, why in _UNSUPPORTED_PARAMETERS.items():
                if key in output.parameters:
                    raise InvalidInput(f"output '{output.name}': {why}")
        names.append(output.name)
    return tuple(names) or DEFAULT_OUTPUTS


def encode_infer_response(
    request: pb.ModelInferRequest,
    model: LoadedModel,
    decoded: InferInput,
    prediction: Prediction,
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=model.version, id=request.id
    )
    response.parameters[TRANSFORMATION_VERSION].string_param = model.transformation_version
    rows = len(prediction.labels)
    for name in decoded.outputs:
        output = response.outputs.add()
        output.name = name
        if name == LABELS:
            output.datatype = "BYTES"
            output.shape.append(rows)
            if decoded.raw:
                response.raw_output_contents.append(
                    b"".join([model.label_raw[label] for label in prediction.labels])
                )
            else:
                output.contents.bytes_contents.extend(
                    [model.label_bytes[label] for label in prediction.labels]
                )
        else:
            probabilities = prediction.probabilities
            assert probabilities is not None, "probabilities were requested"
            output.datatype = "FP64"
            output.shape.extend(probabilities.shape)
            output.parameters[CLASSES].string_param = json.dumps(model.classes)
            if decoded.raw:
                response.raw_output_contents.append(probabilities.astype("<f8").tobytes())
            else:
                output.contents.fp64_contents.extend(probabilities.ravel().tolist())
    return response


def model_metadata(model: LoadedModel, max_rows: int) -> pb.ModelMetadataResponse:
    response = pb.ModelMetadataResponse(
        name=model.name, versions=[model.version], platform=PLATFORM
    )
    response.inputs.add(name=INPUT, datatype="FP64", shape=[-1, model.n_features])
    response.outputs.add(name=LABELS, datatype="BYTES", shape=[-1])
    response.outputs.add(name=PROBABILITIES, datatype="FP64", shape=[-1, len(model.classes)])
    values: dict[str, bool | int | float | str] = {
        TRANSFORMATION_VERSION: model.transformation_version,
        RUN_ID: model.run_id,
        CLASSES: json.dumps(model.classes),
        FEATURE_NAMES: json.dumps(model.feature_names),
        SOURCE: str(model.source),
        LOCATION: model.location,
        ALIAS: model.alias,
        MODEL_CLASS: model.model_class,
        LOADED_AT: datetime.fromtimestamp(model.loaded_at, UTC).isoformat(),
        TRANSFORMATION_URI: f"runs:/{model.run_id}/transformation/transformation.joblib"
        if model.run_id
        else "",
        MAX_BATCH_ROWS: max_rows,
    }
    for key, value in values.items():
        set_parameter(response.parameters[key], value)
    return response


# --- the client side -------------------------------------------------------------------------


def infer_request(
    model_name: str,
    features: npt.ArrayLike,
    transformation_version: str,
    *,
    probabilities: bool = False,
    raw: bool = True,
    request_id: str = "",
    datatype: str = "FP64",
) -> pb.ModelInferRequest:
    """A ModelInfer request for transformed features ([N, F], FP64 or FP32)."""
    if datatype not in _DTYPES:
        raise ValueError(f"datatype must be one of {sorted(_DTYPES)}, got {datatype}")
    matrix = np.ascontiguousarray(features, dtype=_DTYPES[datatype])
    if matrix.ndim != 2:
        raise ValueError(f"features must be a 2-D matrix, got shape {matrix.shape}")
    request = pb.ModelInferRequest(model_name=model_name, id=request_id)
    request.parameters[TRANSFORMATION_VERSION].string_param = transformation_version
    tensor = request.inputs.add(name=INPUT, datatype=datatype, shape=list(matrix.shape))
    if raw:
        request.raw_input_contents.append(matrix.tobytes())
    else:
        getattr(tensor.contents, _CONTENTS[datatype]).extend(matrix.ravel().tolist())
    if probabilities:
        request.outputs.add(name=LABELS)
        request.outputs.add(name=PROBABILITIES)
    return request


@dataclass(frozen=True)
class InferOutput:
    model_version: str
    transformation_version: str
    labels: list[str]
    probabilities: FloatMatrix | None
    classes: tuple[str, ...] | None


def decode_infer_response(response: pb.ModelInferResponse) -> InferOutput:
    labels: list[str] = []
    probabilities: FloatMatrix | None = None
    classes: tuple[str, ...] | None = None
    raw = len(response.raw_output_contents) > 0
    for index, output in enumerate(response.outputs):
        if output.name == LABELS:
            if raw:
                labels = [b.decode() for b in split_bytes(response.raw_output_contents[index])]
            else:
                labels = [b.decode() for b in output.contents.bytes_contents]
        elif output.name == PROBABILITIES:
            data = (
                np.frombuffer(response.raw_output_contents[index], dtype="<f8")
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
    )


def split_bytes(data: bytes) -> list[bytes]:
    """A raw BYTES tensor's elements (each prefixed by its 4-byte little-endian length)."""
    items: list[bytes] = []
    offset = 0
    while offset < len(data):
        (size,) = struct.unpack_from("<I", data, offset)
        offset += 4
        items.append(data[offset : offset + size])
        offset += size
    return items
