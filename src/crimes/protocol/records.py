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

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crimes import contract
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.protocol.tensors import (
    DATATYPES,
    INPUT,
    RECORD_DATATYPES,
    InvalidInput,
    ask_outputs,
    check_raw_size,
    join_bytes,
    requested_outputs,
    split_bytes,
    typed_values,
    unsupported_parameter,
)


@dataclass(frozen=True)
class RecordsInput:
    """A decoded record request: each feature's values (validated, normalised), its size."""

    columns: dict[str, Sequence[Any]]
    rows: int
    outputs: tuple[str, ...]
    raw: bool


def is_record_request(request: pb.ModelInferRequest) -> bool:
    names = [tensor.name for tensor in request.inputs]
    return bool(names) and INPUT not in names and all(n in contract.SPEC_BY_NAME for n in names)


def decode(request: pb.ModelInferRequest, max_rows: int) -> RecordsInput:
    contents = list(request.raw_input_contents)
    raw = len(contents) > 0
    if raw and len(contents) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(contents)} entries for "
            f"{len(request.inputs)} input tensors"
        )
    columns: dict[str, Any] = {}
    rows: int | None = None
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in columns:
            raise InvalidInput(f"input '{name}' is sent twice")
        if tensor.parameters:
            unsupported_parameter(tensor.parameters, f"input '{name}'")
        datatype, allowed = tensor.datatype, RECORD_DATATYPES[contract.SPEC_BY_NAME[name].kind]
        if datatype not in allowed:
            raise InvalidInput(
                f"input '{name}': datatype '{datatype}', expected {' or '.join(allowed)}"
            )
        shape = tensor.shape
        if len(shape) != 1 or shape[0] < 1:
            raise InvalidInput(f"input '{name}': shape {list(shape)}, expected [N] with N >= 1")
        if rows is None:
            rows = shape[0]
            if rows > max_rows:
                raise InvalidInput(f"batch of {rows} rows is over the limit of {max_rows} rows")
        elif shape[0] != rows:
            raise InvalidInput(f"input '{name}' has {shape[0]} rows, the others {rows}")
        if raw and tensor.HasField("contents"):
            raise InvalidInput(f"input '{name}' has both contents and raw_input_contents")
        columns[name] = _values(name, datatype, tensor, contents[index] if raw else None, rows)
    missing = [s.name for s in contract.FEATURE_SPECS if not s.nullable and s.name not in columns]
    if missing:
        raise InvalidInput(f"the record inputs lack {', '.join(missing)}")
    assert rows is not None
    try:
        checked = contract.validate_columns(columns, rows)
    except contract.ContractViolation as error:
        raise InvalidInput(str(error)) from error
    return RecordsInput(checked, rows, requested_outputs(request.outputs), raw)


def _values(name: str, datatype: str, tensor: Any, data: bytes | None, rows: int) -> Any:
    if datatype == "BYTES":
        items = split_bytes(data) if data is not None else list(tensor.contents.bytes_contents)
        if len(items) != rows:
            raise InvalidInput(f"input '{name}': {len(items)} values for {rows} rows")
        # A column holds few distinct texts (categories): each is decoded once.
        try:
            text = {item: item.decode("utf-8") for item in set(items)}
        except UnicodeDecodeError as error:
            row = next(i for i, item in enumerate(items) if not _is_utf8(item))
            raise InvalidInput(f"input '{name}' row {row}: not UTF-8 text") from error
        return [text[item] for item in items]
    if data is None:
        return typed_values(name, tensor, rows)  # validation copies it into a list
    described = DATATYPES[datatype]
    check_raw_size(name, data, described, rows)
    # struct gives plain Python values at once (what validation reads), for one value or
    # thousands, cheaper than a numpy array and its tolist().
    return struct.unpack(f"<{rows}{described.code}", data)


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
    confidence: bool = False,
    raw: bool = True,
    request_id: str = "",
) -> pb.ModelInferRequest:
    """A ModelInfer request carrying records (dicts of contract features) as columns."""
    return columns_request(
        model_name,
        contract.feature_columns(records),
        len(records),
        probabilities=probabilities,
        confidence=confidence,
        raw=raw,
        request_id=request_id,
    )


def columns_request(
    model_name: str,
    columns: Mapping[str, Sequence[Any]],
    rows: int,
    *,
    probabilities: bool = False,
    confidence: bool = False,
    raw: bool = True,
    request_id: str = "",
) -> pb.ModelInferRequest:
    """A ModelInfer request carrying records given column by column (None: missing).

    `raw` puts the values in raw_input_contents (cheap from numpy arrays); otherwise in the
    typed contents, which protobuf fills and reads in C from Python lists: the cheaper form for
    a caller that holds records as Python values, as the gateway does.
    """
    request = pb.ModelInferRequest(model_name=model_name, id=request_id)
    for spec in contract.FEATURE_SPECS:
        values = columns[spec.name]
        datatype = DATATYPES[RECORD_DATATYPES[spec.kind][0]]
        tensor = request.inputs.add(name=spec.name, datatype=datatype.name, shape=[rows])
        if spec.kind == "text":
            # Few distinct texts per column (categories): each is encoded once.
            utf8 = {v: b"" if v is None else str(v).encode() for v in set(values)}
            encoded = [utf8[v] for v in values]
            if raw:
                request.raw_input_contents.append(join_bytes(encoded))
            else:
                tensor.contents.bytes_contents.extend(encoded)
            continue
        if spec.kind == "float":
            values = [math.nan if v is None else v for v in values]
        if raw:
            request.raw_input_contents.append(struct.pack(f"<{rows}{datatype.code}", *values))
        else:
            getattr(tensor.contents, datatype.contents).extend(values)
    ask_outputs(request, probabilities=probabilities, confidence=confidence)
    return request
