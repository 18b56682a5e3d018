"""The Open Inference Protocol's tensors as this project speaks them: their names, the one
table of datatypes both input forms (a matrix of features, raw records) and both sides of a
call read, and the checks every tensor of a request passes.

Each datatype's elements travel either typed (`contents.<field>`) or raw (little-endian bytes in
`raw_input_contents`/`raw_output_contents`; BYTES elements each after a 4-byte length).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from crimes.proto_gen.inference import grpc_service_pb2 as pb

INPUT: Final = "features"
LABELS: Final = "fbi_code"
PROBABILITIES: Final = "probabilities"
# The top probability of each row (FP32 [N]): what the prediction log keeps of a model's
# certainty, for a tenth of `probabilities`' bytes.
CONFIDENCE: Final = "confidence"
# Each row's label as its index into the classes the output's `classes` parameter lists
# (JSON): INT32, what a client reading many rows decodes fastest (the labels as BYTES cost the
# gateway about 0.4 ms a 1,000-row batch per model, one element a row). Advertised in
# ModelMetadata; a client asks for it only where a service advertises it.
LABEL_INDEX: Final = "fbi_code_index"
OUTPUTS: Final = (LABELS, PROBABILITIES, CONFIDENCE, LABEL_INDEX)
DEFAULT_OUTPUTS: Final = (LABELS,)
# Protocol features some clients can ask for and this server does not offer.
_UNSUPPORTED_PARAMETERS: Final = {
    "shared_memory_region": "shared-memory tensors are not supported",
    "classification": "the classification extension is not supported",
}


class InvalidInput(ValueError):
    """A message that breaks the protocol as this project speaks it; the text names the part."""


def unsupported_parameter(parameters: Mapping[str, pb.InferParameter], where: str) -> None:
    """InvalidInput when a tensor asks for a protocol feature this server does not offer."""
    if not parameters:  # the usual case: a map's length is cheaper than a lookup per key
        return
    for key, why in _UNSUPPORTED_PARAMETERS.items():
        if key in parameters:
            raise InvalidInput(f"{where}: {why}")


def requested_outputs(
    requested: Iterable[pb.ModelInferRequest.InferRequestedOutputTensor],
) -> tuple[str, ...]:
    names: list[str] = []
    for output in requested:
        # Each read of a protobuf field makes a new Python object: read once.
        name = output.name
        if name not in OUTPUTS:
            raise InvalidInput(
                f"unknown output '{name}': outputs are {', '.join(map(repr, OUTPUTS))}"
            )
        if name in names:
            raise InvalidInput(f"output '{name}' is requested twice")
        unsupported_parameter(output.parameters, f"output '{name}'")
        names.append(name)
    return tuple(names) or DEFAULT_OUTPUTS


def ask_outputs(
    request: pb.ModelInferRequest,
    *,
    probabilities: bool,
    confidence: bool,
    label_index: bool = False,
) -> None:
    """Name the outputs a request wants beyond the default (the labels alone as BYTES): the
    labels as indices when `label_index`."""
    if not (probabilities or confidence or label_index):
        return
    request.outputs.add(name=LABEL_INDEX if label_index else LABELS)
    if probabilities:
        request.outputs.add(name=PROBABILITIES)
    if confidence:
        request.outputs.add(name=CONFIDENCE)


@dataclass(frozen=True)
class Datatype:
    name: str
    contents: str  # the typed field of InferTensorContents
    code: str  # the struct format character of a raw element ("" for BYTES)
    dtype: np.dtype[Any] | None  # numpy's little-endian dtype (None for BYTES)
    itemsize: int = field(init=False)  # bytes of a raw element (0 for BYTES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "itemsize", struct.calcsize(self.code) if self.code else 0)


DATATYPES: Final[dict[str, Datatype]] = {
    datatype.name: datatype
    for datatype in (
        Datatype("BYTES", "bytes_contents", "", None),
        Datatype("BOOL", "bool_contents", "?", np.dtype("?")),
        Datatype("INT64", "int64_contents", "q", np.dtype("<i8")),
        Datatype("INT32", "int_contents", "i", np.dtype("<i4")),
        Datatype("FP64", "fp64_contents", "d", np.dtype("<f8")),
        Datatype("FP32", "fp32_contents", "f", np.dtype("<f4")),
    )
}
# The datatypes of the features' matrix (the first is the one sent unless a model says).
MATRIX_DATATYPES: Final = ("FP64", "FP32")
# Raw records, one tensor per contract feature: each kind's datatypes (the first the one sent).
RECORD_DATATYPES: Final[dict[str, tuple[str, ...]]] = {
    "text": ("BYTES",),
    "bool": ("BOOL",),
    "int": ("INT64", "INT32"),
    "float": ("FP64", "FP32"),
}

# The 4-byte little-endian length before each element of a raw BYTES tensor.
_LENGTH: Final = struct.Struct("<I")


def typed_values(name: str, tensor: pb.ModelInferRequest.InferInputTensor, count: int) -> Any:
    """A tensor's typed contents (the protobuf's repeated field), checked: its datatype's
    field only, holding `count` values."""
    datatype = DATATYPES[tensor.datatype]
    misplaced = [f.name for f, _ in tensor.contents.ListFields() if f.name != datatype.contents]
    if misplaced:
        raise InvalidInput(
            f"input '{name}' is {datatype.name} but has data in {', '.join(misplaced)}: "
            f"{datatype.name} data goes in {datatype.contents}"
        )
    values = getattr(tensor.contents, datatype.contents)
    if len(values) != count:
        raise InvalidInput(
            f"input '{name}': {datatype.contents} has {len(values)} values, {count} needed"
        )
    return values


def check_raw_size(name: str, data: bytes, datatype: Datatype, count: int) -> None:
    """Raw data of exactly `count` fixed-size elements."""
    if len(data) != count * datatype.itemsize:
        raise InvalidInput(
            f"input '{name}': raw data has {len(data)} bytes, {count} {datatype.name} values "
            f"need {count * datatype.itemsize}"
        )


def join_bytes(items: Iterable[bytes]) -> bytes:
    """A raw BYTES tensor from its elements: `split_bytes` read backwards."""
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def length_prefixed(item: bytes) -> bytes:
    return _LENGTH.pack(len(item)) + item


def split_bytes(data: bytes) -> list[bytes]:
    """A raw BYTES tensor's elements (each prefixed by its 4-byte little-endian length);
    InvalidInput when the data ends inside a length or an element."""
    items: list[bytes] = []
    append, length = items.append, _LENGTH.unpack_from
    offset, end = 0, len(data)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput(f"raw BYTES data ends inside an element's length at byte {offset}")
        start = offset + 4
        offset = start + length(data, offset)[0]
        if offset > end:
            raise InvalidInput(f"raw BYTES data ends inside element {len(items)}")
        append(data[start:offset])
    return items
