"""The prediction routes' bodies as typed values, and their answers as bytes: the gateway's
codec, apart from the edge that calls it and the core it feeds.

A valid batch is decoded and validated in one pass straight into columns: msgspec decodes the
JSON into records of the contract's types (no dict, no pydantic model per record), the records
are turned into columns, and the contract's rules run column-wise (`contract.validate_columns`,
the same check the model services apply to raw records). A body msgspec does not take (pydantic
is laxer on types: `4.0` or `"4"` for an integer) gets pydantic's own type check; anything still
refused goes through the path FastAPI takes for a declared body (content type, `json.loads`,
validation with `from_attributes`), so every 422 names the same fields with the same messages.
"""

from __future__ import annotations

import email.message
import json
import operator
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar

import msgspec
from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from crimes import contract
from crimes.gateway.schemas import BatchRequest, batch_columns

Model = TypeVar("Model", bound=BaseModel)
Columns = Mapping[str, Sequence[Any]]

_TYPES: Final[dict[str, type]] = {"text": str, "bool": bool, "int": int, "float": float}


def _record_type() -> type[msgspec.Struct]:
    """The contract's features as a msgspec record: its types (bounds, lengths and
    normalisation are the column check's), optional features defaulting to missing, no other
    key."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        (spec.name, _TYPES[spec.kind] | None, None)
        if spec.nullable
        else (spec.name, _TYPES[spec.kind])
        for spec in contract.FEATURE_SPECS
    ]
    return msgspec.defstruct("Record", fields, kw_only=True, forbid_unknown_fields=True)


_Record: Final[Any] = _record_type()
_Batch: Final[Any] = msgspec.defstruct(
    "Batch", [("features", list[_Record])], forbid_unknown_fields=True
)
_BATCH: Final[msgspec.json.Decoder[Any]] = msgspec.json.Decoder(_Batch)
_FEATURES: Final = operator.attrgetter(*contract.FEATURES)


def _batch_length() -> tuple[int, int]:
    """`BatchRequest`'s bounds on its number of records."""
    fewest, most = 0, 2**63
    for item in BatchRequest.model_fields["features"].metadata:
        fewest = getattr(item, "min_length", fewest)
        most = getattr(item, "max_length", most)
    return fewest, most


_FEWEST, _MOST = _batch_length()


def batch_records(body: bytes) -> tuple[dict[str, list[Any]], int] | None:
    """A valid `BatchRequest` body's records as validated, normalised columns and their count
    (the values `model_dump` gives, column by column); None for a body whose problems are for
    the models to name."""
    try:
        rows = _BATCH.decode(body).features
    except msgspec.ValidationError:
        return batch_columns(body)  # pydantic's laxer types, then the same column check
    except msgspec.DecodeError:
        return None
    if not _FEWEST <= len(rows) <= _MOST:
        return None  # BatchRequest names it
    # Each record's features in the contract's order, then the columns (in C, not per value).
    values = zip(*map(_FEATURES, rows), strict=True)
    columns = dict(zip(contract.FEATURES, map(list, values), strict=True))
    try:
        return contract.validate_columns(columns, len(rows)), len(rows)
    except contract.ContractViolation:
        return None


def _is_json(content_type: str | None) -> bool:
    # FastAPI's rule (strict content type): no header means not JSON.
    if not content_type:
        return False
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


async def parse(request: Request, model: type[Model]) -> Model:
    """The body as `model`; RequestValidationError names its problems as FastAPI would."""
    body = await request.body()
    is_json = _is_json(request.headers.get("content-type"))
    if body and is_json:
        try:
            return model.model_validate_json(body)
        except ValidationError:
            pass  # named below exactly as FastAPI would
    raise _problems(_python_value(body, is_json), model)


async def parse_batch(request: Request) -> tuple[Columns, int]:
    """A `BatchRequest`'s records as validated columns and their count; any body that fails
    goes through `parse`, so the 422s are the models' own."""
    body = await request.body()
    if body and _is_json(request.headers.get("content-type")):
        batch = batch_records(body)
        if batch is not None:
            return batch
    parsed = await parse(request, BatchRequest)  # raises, but for a parser disagreement
    rows = parsed.model_dump()["features"]
    return contract.feature_columns(rows), len(rows)


def _python_value(body: bytes, is_json: bool) -> Any:
    if not body:
        return None
    if not is_json:
        return body
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", error.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": error.msg},
                }
            ],
            body=error.doc,
        ) from error
    except Exception as error:
        raise HTTPException(
            status_code=400, detail="There was an error parsing the body"
        ) from error


def _problems(value: Any, model: type[BaseModel]) -> Exception:
    if value is None:
        return RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}],
            body=None,
        )
    try:
        model.model_validate(value, from_attributes=True)
    except ValidationError as error:
        return RequestValidationError(
            [{**item, "loc": ("body", *item["loc"])} for item in error.errors()], body=value
        )
    # Valid as Python but not as JSON (only a JSON parser difference could get here).
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body",), "msg": "invalid body", "input": None}],
        body=value,
    )


def json_response(
    content: Any, headers: dict[str, str] | None = None, status_code: int = 200
) -> Response:
    """What FastAPI's JSONResponse would send, without validating a response model first."""
    return Response(
        status_code=status_code,
        content=json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        ).encode(),
        media_type="application/json",
        headers=headers,
    )
