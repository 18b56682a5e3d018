"""Malformed requests, each with the status code and message the model server must answer.

One catalogue for the in-process server tests and the end-to-end suite against a real process.
Each case builds its request from a valid one for the model under test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.protocol import inference

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@dataclass(frozen=True)
class Target:
    """What a valid request for the model under test looks like."""

    name: str
    version: str
    transformation_version: str
    n_features: int
    max_batch_rows: int

    def valid(self, rows: int = 2, *, raw: bool = True) -> pb.ModelInferRequest:
        features = np.full((rows, self.n_features), 0.5)
        return inference.infer_request(self.name, features, self.transformation_version, raw=raw)


@dataclass(frozen=True)
class Case:
    kind: str
    build: Callable[[Target], pb.ModelInferRequest | bytes]
    code: grpc.StatusCode
    message: str


def _edit(
    edit: Callable[[pb.ModelInferRequest, Target], None], *, raw: bool = True
) -> Callable[[Target], pb.ModelInferRequest]:
    def build(target: Target) -> pb.ModelInferRequest:
        request = target.valid(raw=raw)
        edit(request, target)
        return request

    return build


def _shape(*dims: int, raw_values: int | None = None) -> Callable[[Target], pb.ModelInferRequest]:
    def build(target: Target) -> pb.ModelInferRequest:
        request = target.valid()
        size = [target.n_features if d == -1 else d for d in dims]
        del request.inputs[0].shape[:]
        request.inputs[0].shape.extend(size)
        count = raw_values if raw_values is not None else max(0, int(np.prod(size)))
        request.raw_input_contents[0] = np.full(count, 0.5).tobytes()
        return request

    return build


def _no_inputs(r: pb.ModelInferRequest, t: Target) -> None:
    del r.inputs[:]
    del r.raw_input_contents[:]


def _two_inputs(r: pb.ModelInferRequest, t: Target) -> None:
    r.inputs.add().CopyFrom(r.inputs[0])
    r.raw_input_contents.append(r.raw_input_contents[0])


def _rename(r: pb.ModelInferRequest, t: Target) -> None:
    r.inputs[0].name = "input__0"


def _datatype(datatype: str) -> Callable[[pb.ModelInferRequest, Target], None]:
    def edit(r: pb.ModelInferRequest, t: Target) -> None:
        r.inputs[0].datatype = datatype

    return edit


def _raw_short(r: pb.ModelInferRequest, t: Target) -> None:
    r.raw_input_contents[0] = r.raw_input_contents[0][:-8]


def _typed_short(r: pb.ModelInferRequest, t: Target) -> None:
    del r.inputs[0].contents.fp64_contents[-1]


def _misplaced(r: pb.ModelInferRequest, t: Target) -> None:
    values = list(r.inputs[0].contents.fp64_contents)
    r.inputs[0].contents.ClearField("fp64_contents")
    r.inputs[0].contents.fp32_contents.extend(values)


def _raw_and_typed(r: pb.ModelInferRequest, t: Target) -> None:
    r.inputs[0].contents.fp64_contents.extend([0.5] * (2 * t.n_features))


def _two_raw(r: pb.ModelInferRequest, t: Target) -> None:
    r.raw_input_contents.append(r.raw_input_contents[0])


def _value(value: float) -> Callable[[pb.ModelInferRequest, Target], None]:
    def edit(r: pb.ModelInferRequest, t: Target) -> None:
        data = np.frombuffer(r.raw_input_contents[0], dtype="<f8").copy()
        data[t.n_features + 3] = value
        r.raw_input_contents[0] = data.tobytes()

    return edit


def _no_version(r: pb.ModelInferRequest, t: Target) -> None:
    del r.parameters[inference.TRANSFORMATION_VERSION]


def _int_version(r: pb.ModelInferRequest, t: Target) -> None:
    r.parameters[inference.TRANSFORMATION_VERSION].int64_param = 7


def _empty_version(r: pb.ModelInferRequest, t: Target) -> None:
    r.parameters[inference.TRANSFORMATION_VERSION].string_param = ""


def _other_version(r: pb.ModelInferRequest, t: Target) -> None:
    r.parameters[inference.TRANSFORMATION_VERSION].string_param = "tf-0123456789abcdef"


def _output(
    *names: str, parameter: str | None = None
) -> Callable[[pb.ModelInferRequest, Target], None]:
    def edit(r: pb.ModelInferRequest, t: Target) -> None:
        for name in names:
            output = r.outputs.add(name=name)
            if parameter:
                output.parameters[parameter].int64_param = 3

    return edit


def _shared_memory(r: pb.ModelInferRequest, t: Target) -> None:
    r.inputs[0].parameters["shared_memory_region"].string_param = "region0"


def _model_name(name: str) -> Callable[[pb.ModelInferRequest, Target], None]:
    def edit(r: pb.ModelInferRequest, t: Target) -> None:
        r.model_name = name

    return edit


def _model_version(r: pb.ModelInferRequest, t: Target) -> None:
    r.model_version = "99"


def _garbage(target: Target) -> bytes:
    return b"\xff\xff\xff\xff not a protobuf message"


CASES: tuple[Case, ...] = (
    Case("no input tensor", _edit(_no_inputs), INVALID, "0 input tensors"),
    Case("two input tensors", _edit(_two_inputs), INVALID, "2 input tensors"),
    Case("unknown input name", _edit(_rename), INVALID, "unknown input tensor 'input__0'"),
    Case("INT64 datatype", _edit(_datatype("INT64")), INVALID, "datatype 'INT64'"),
    Case("BYTES datatype", _edit(_datatype("BYTES")), INVALID, "datatype 'BYTES'"),
    Case("one dimension", _shape(-1), INVALID, "has 1 dimensions"),
    Case("three dimensions", _shape(1, 1, -1), INVALID, "has 3 dimensions"),
    Case("negative dimension", _shape(-2, -1, raw_values=0), INVALID, "negative size"),
    Case("empty batch", _shape(0, -1), INVALID, "empty batch"),
    Case("oversized batch", _shape(10**9, -1, raw_values=1), INVALID, "over the limit"),
    Case("no features", _shape(1, 0), INVALID, "has no features"),
    Case("too few features", _shape(2, 5), INVALID, "5 features per row"),
    Case("raw data too short", _edit(_raw_short), INVALID, "raw data has"),
    Case("typed data too short", _edit(_typed_short, raw=False), INVALID, "fp64_contents has"),
    Case("data in the wrong field", _edit(_misplaced, raw=False), INVALID, "data in fp32_contents"),
    Case("raw and typed data", _edit(_raw_and_typed), INVALID, "both contents and raw"),
    Case("two raw entries", _edit(_two_raw), INVALID, "raw_input_contents has 2 entries"),
    Case("NaN feature", _edit(_value(float("nan"))), INVALID, "row 1, column 3"),
    Case("infinite feature", _edit(_value(float("inf"))), INVALID, "is inf"),
    Case("no transformation version", _edit(_no_version), INVALID, "is missing"),
    Case("numeric transformation version", _edit(_int_version), INVALID, "string_param"),
    Case("empty transformation version", _edit(_empty_version), INVALID, "is empty"),
    Case(
        "other transformation version",
        _edit(_other_version),
        PRECONDITION,
        "features made with transformation tf-0123456789abcdef",
    ),
    Case("unknown output", _edit(_output("class_ids")), INVALID, "unknown output 'class_ids'"),
    Case("output twice", _edit(_output("fbi_code", "fbi_code")), INVALID, "requested twice"),
    Case(
        "classification extension",
        _edit(_output("fbi_code", parameter="classification")),
        INVALID,
        "classification extension",
    ),
    Case("shared-memory input", _edit(_shared_memory), INVALID, "shared-memory"),
    Case("unknown model", _edit(_model_name("no_such_model")), NOT_FOUND, "unknown model"),
    Case("empty model name", _edit(_model_name("")), INVALID, "model name is empty"),
    Case("unknown model version", _edit(_model_version), NOT_FOUND, "version 99"),
    Case("bytes that are no request", _garbage, INVALID, "not a valid ModelInferRequest"),
)
