"""Raw crime records over the Open Inference Protocol: one input tensor per contract feature.

The columnar convention of MLServer's pandas codec and KServe's V2 examples: tensor `iucr`,
`beat`, ... each of shape [N], BYTES for text (UTF-8), BOOL for arrest/domestic, INT64 (or
INT32) for the codes and the date parts, FP64 (or FP32) for latitude/longitude, NaN for a
missing coordinate. `location_description`, `latitude` and `longitude` may be left out (all
missing). A request is a record request when it has no `features` tensor and every tensor is
named after a feature. The model service validates the values by the contract's rules,
normalises them and applies the transformation of the version it serves.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from crimes import contract
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.protocol.inference import (
    INPUT,
    RECORD_DATATYPES,
    InvalidInput,
    requested_outputs,
    split_bytes,
    unsupported_parameter,
)

DATATYPES: Final = RECORD_DATATYPES
_RAW: Final[Mapping[str, str]] = {
    "BOOL": "?",
    "INT64": "<i8",
    "INT32": "<i4",
    "FP64": "<f8",
    "FP32": "<f4",
}
_TYPED: Final[Mapping[str, str]] = {
    "BYTES": "bytes_contents",
    "BOOL": "bool_contents",
    "INT64": "int64_contents",
    "INT32": "int_contents",
    "FP64": "fp64_contents",
    "FP32": "fp32_contents",
}


@dataclass(frozen=True)
class RecordsInput:
    """A decoded record request: each feature's values (validated, normalised), its size."""

    columns: dict[str, list[Any]]
    rows: int
    outputs: tuple[str, ...]
    raw: bool


def is_record_request(request: pb.ModelInferRequest) -> bool:
    names = [tensor.name for tensor in request.inputs]
    return bool(names) and INPUT not in names and all(n in contract.SPEC_BY_NAME for n in names)


def decode(request: pb.ModelInferRequest, max_rows: int) -> RecordsInput:
    raw = len(request.raw_input_contents) > 0
    if raw and len(request.raw_input_contents) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(request.raw_input_contents)} entries for "
            f"{len(request.inputs)} input tensors"
        )
    columns: dict[str, Any] = {}
    rows: int | None = None
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in columns:
            raise InvalidInput(f"input '{name}' is sent twice")
        unsupported_parameter(tensor.parameters, f"input '{name}'")
        spec = contract.SPEC_BY_NAME[name]
        if tensor.datatype not in DATATYPES[spec.kind]:
            raise InvalidInput(
                f"input '{name}': datatype '{tensor.datatype}', expected "
                f"{' or '.join(DATATYPES[spec.kind])}"
            )
        shape = list(tensor.shape)
        if len(shape) != 1 or shape[0] < 1:
            raise InvalidInput(f"input '{name}': shape {shape}, expected [N] with N >= 1")
        if rows is None:
            rows = shape[0]
            if rows > max_rows:
                raise InvalidInput(f"batch of {rows} rows is over the limit of {max_rows} rows")
        elif shape[0] != rows:
            raise InvalidInput(f"input '{name}' has {shape[0]} rows, the others {rows}")
        if raw and tensor.HasField("contents"):
            raise InvalidInput(f"input '{name}' has both contents and raw_input_contents")
        data = request.raw_input_contents[index] if raw else None
        columns[name] = _values(name, tensor, data, rows)
    missing = [s.name for s in contract.FEATURE_SPECS if not s.nullable and s.name not in columns]
    if missing:
        raise InvalidInput(f"the record inputs lack {', '.join(missing)}")
    assert rows is not None
    try:
        checked = contract.validate_columns(columns, rows)
    except contract.ContractViolation as error:
        raise InvalidInput(str(error)) from error
    return RecordsInput(checked, rows, requested_outputs(request.outputs), raw)


def _values(name: str, tensor: Any, data: bytes | None, rows: int) -> Any:
    datatype = tensor.datatype
    if datatype == "BYTES":
        items = split_bytes(data) if data is not None else list(tensor.contents.bytes_contents)
        if len(items) != rows:
            raise InvalidInput(f"input '{name}': {len(items)} values for {rows} rows")
        try:
            return [item.decode("utf-8") for item in items]
        except UnicodeDecodeError as error:
            row = next(i for i, item in enumerate(items) if not _is_utf8(item))
            raise InvalidInput(f"input '{name}' row {row}: not UTF-8 text") from error
    if data is not None:
        dtype = np.dtype(_RAW[datatype])
        if len(data) != rows * dtype.itemsize:
            raise InvalidInput(
                f"input '{name}': raw data has {len(data)} bytes, {rows} {datatype} values need "
                f"{rows * dtype.itemsize}"
            )
        return np.frombuffer(data, dtype=dtype)
    expected = _TYPED[datatype]
    misplaced = [f.name for f, _ in tensor.contents.ListFields() if f.name != expected]
    if misplaced:
        raise InvalidInput(f"input '{name}' is {datatype} but has data in {', '.join(misplaced)}")
    values = getattr(tensor.contents, expected)
    if len(values) != rows:
        raise InvalidInput(f"input '{name}': {expected} has {len(values)} values for {rows} rows")
    return list(values)


def _is_utf8(item: bytes) -> bool:
    try:
        item.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- the client side -------------------------------------------------------------------------


def infer_request(
    model_name: str,
    records: Sequence[Mapping[str, Any]],
    *,
    probabilities: bool = False,
    raw: bool = True,
    request_id: str = "",
) -> pb.ModelInferRequest:
    """A ModelInfer request carrying records (dicts of contract features) as columns."""
    request = pb.ModelInferRequest(model_name=model_name, id=request_id)
    for spec in contract.FEATURE_SPECS:
        values = [record.get(spec.name) for record in records]
        datatype = DATATYPES[spec.kind][0]
        tensor = request.inputs.add(name=spec.name, datatype=datatype, shape=[len(values)])
        if spec.kind == "text":
            encoded = [b"" if v is None else str(v).encode() for v in values]
            if raw:
                request.raw_input_contents.append(
                    b"".join(struct.pack("<I", len(e)) + e for e in encoded)
                )
            else:
                tensor.contents.bytes_contents.extend(encoded)
            continue
        array = _array(spec.kind, values)
        if raw:
            request.raw_input_contents.append(array.astype(_RAW[datatype]).tobytes())
        else:
            getattr(tensor.contents, _TYPED[datatype]).extend(array.tolist())
    if probabilities:
        request.outputs.add(name="fbi_code")
        request.outputs.add(name="probabilities")
    return request


def _array(kind: str, values: list[Any]) -> npt.NDArray[Any]:
    if kind == "float":
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    if kind == "bool":
        return np.array(values, dtype=bool)
    return np.array(values, dtype=np.int64)
