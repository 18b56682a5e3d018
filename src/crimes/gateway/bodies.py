"""The prediction routes' bodies as typed values, and their answers as bytes: the gateway's
codec, apart from the edge that calls it and the core it feeds.

A batch is read in an order that keeps a bad one cheap, whatever it holds: its envelope (the
keys, and the records as raw JSON: a scan, no record decoded), the number of records against
the deployment's maximum, then each record validated once, straight into the contract's types
by msgspec (no dict, no pydantic model per record), or by pydantic's laxer types when msgspec
refuses them (`4.0` or `"4"` for an integer, as the models take them); then columns, and the
contract's rules column-wise (`contract.validate_columns`, the same check the model services
apply to raw records). A bad record is named by the models' own validation (`features.3.hora`,
the messages FastAPI would give), and naming stops at the first MAX_PROBLEMS problems. A body
that is not a batch at all, and the single-record routes, go through the path FastAPI takes for
a declared body (content type, `json.loads`, validation with `from_attributes`).
"""

from __future__ import annotations

import email.message
import json
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgspec
from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

from crimes import contract
from crimes.contract import CrimeFeatures
from crimes.feedback.keys import RecordKey, RecordKeys, normalise_case_number, normalise_record_id
from crimes.gateway.schemas import RECORD_TYPES, BatchRequest

Model = TypeVar("Model", bound=BaseModel)
Columns = Mapping[str, Sequence[Any]]

_TYPES: Final[dict[str, type]] = {"text": str, "bool": bool, "int": int, "float": float}


def _record_type() -> type[msgspec.Struct]:
    """The contract's features as a msgspec record: its types (bounds, lengths and
    normalisation are the column check's), optional features defaulting to missing, no other
    key; not tracked by the garbage collector (its values are never containers)."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        (spec.name, _TYPES[spec.kind] | None, None)
        if spec.nullable
        else (spec.name, _TYPES[spec.kind])
        for spec in contract.FEATURE_SPECS
    ]
    return msgspec.defstruct("Record", fields, kw_only=True, forbid_unknown_fields=True, gc=False)


_Record: Final[Any] = _record_type()
_RECORD: Final[msgspec.json.Decoder[Any]] = msgspec.json.Decoder(_Record)
# A whole batch of records in one call (no Python per record): the common case, all strict.
_RECORDS: Final[msgspec.json.Decoder[list[Any]]] = msgspec.json.Decoder(list[_Record])
# A batch's envelope: its keys, then its records as raw JSON (a scan, no record decoded).
_TOP: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RAW_LIST: Final = msgspec.json.Decoder(list[msgspec.Raw])
_FEATURES: Final = operator.attrgetter(*contract.FEATURES)
# A 422 names at most this many problems (and says that it stopped): a bad batch costs a few
# record validations and a few hundred bytes of answer, whatever it holds.
MAX_PROBLEMS: Final = 20


def _batch_length() -> tuple[int, int]:
    """`BatchRequest`'s bounds on its number of records."""
    fewest, most = 0, 2**63
    for item in BatchRequest.model_fields["features"].metadata:
        fewest = getattr(item, "min_length", fewest)
        most = getattr(item, "max_length", most)
    return fewest, most


_FEWEST, _MOST = _batch_length()


class NotABatch(Exception):
    """A body that is not `{"features": [...]}` (pydantic names what it is instead)."""


# The record keys a batch may carry beside its records: their types (the normalisation and
# its rules are `feedback.keys`').
_Key: Final[Any] = msgspec.defstruct(
    "Key",
    [("id", int | str | None, None), ("case_number", str | None, None)],
    kw_only=True,
    forbid_unknown_fields=True,
)
_KEYS: Final = msgspec.json.Decoder(list[_Key])
_ENVELOPE: Final = frozenset({"features", "keys"})


@dataclass(frozen=True)
class RawBatch:
    """A batch body's envelope read: its records as raw JSON (all of them, and one by one,
    counted before any is read), and its keys (raw)."""

    records: msgspec.Raw
    each: list[msgspec.Raw]
    keys: msgspec.Raw | None


def batch_raws(body: bytes) -> RawBatch:
    """The records of a `{"features": [...], "keys": [...]?}` body as raw JSON, and its keys;
    RequestValidationError for other keys or no `features`; NotABatch for anything else."""
    try:
        top = _TOP.decode(body)
        raws = _RAW_LIST.decode(top["features"]) if "features" in top else None
    except msgspec.DecodeError:
        raise NotABatch from None
    except RecursionError:
        raise _too_deep() from None
    if raws is None or not _ENVELOPE.issuperset(top):
        # Only the envelope's problems, by BatchRequest itself (records stand in for theirs).
        reduced: dict[str, Any] = {key: None for key in top if key not in _ENVELOPE}
        if raws is not None:
            reduced["features"] = [contract.EXAMPLE_RECORD]
        raise _problems(reduced, BatchRequest)
    return RawBatch(top["features"], raws, top.get("keys"))


def batch_keys(raw: msgspec.Raw | None, count: int) -> RecordKeys | None:
    """A batch's record keys, one per record, normalised; RequestValidationError names the
    first problems (`keys.3.id`) or a count that is not the records'."""
    if raw is None or bytes(raw) == b"null":
        return None
    ids: list[str | None] = []
    case_numbers: list[str | None] = []
    try:
        for key in _KEYS.decode(raw):
            ids.append(normalise_record_id(key.id))
            case_numbers.append(normalise_case_number(key.case_number))
            if ids[-1] is None and case_numbers[-1] is None:
                raise ValueError("no key")
    except (msgspec.DecodeError, ValueError):
        raise _key_problems(raw) from None
    if len(ids) != count:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "keys"),
                    "msg": f"one key per record: {count} records, {len(ids)} keys",
                }
            ]
        )
    return RecordKeys(ids, case_numbers)


_KEY_LIST: Final = TypeAdapter(list[RecordKey])


def _key_problems(raw: msgspec.Raw) -> RequestValidationError:
    """What is wrong with a batch's keys, as `RecordKey` names it (the first MAX_PROBLEMS)."""
    try:
        _KEY_LIST.validate_json(bytes(raw))
    except ValidationError as error:
        problems = error.errors(include_input=False, include_url=False)[:MAX_PROBLEMS]
        return RequestValidationError(
            [{**item, "loc": ("body", "keys", *item["loc"])} for item in problems]
        )
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", "keys"), "msg": "invalid record keys"}]
    )


def _too_deep() -> RequestValidationError:
    """A body nested deeper than the JSON parsers follow (FastAPI's own answer is a 400)."""
    return RequestValidationError(
        [
            {
                "type": "json_invalid",
                "loc": ("body",),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": "nested too deeply"},
            }
        ]
    )


def check_count(count: int, maximum: int) -> None:
    """The number of records against the deployment's maximum, before any is validated."""
    if count < _FEWEST:
        raise _problems({"features": []}, BatchRequest)
    if count > min(maximum, _MOST):
        raise RequestValidationError(
            [
                {
                    "type": "too_long",
                    "loc": ("body", "features"),
                    "msg": f"at most {min(maximum, _MOST)} records per batch, got {count}",
                }
            ]
        )


def records_columns(
    raws: list[msgspec.Raw], records: msgspec.Raw | None = None
) -> tuple[dict[str, Sequence[Any]], int]:
    """Raw records as validated, normalised columns and their count (the values `model_dump`
    gives, column by column), each record validated once: by msgspec into the contract's
    types (`records`, the same records as one JSON array: all in one call when every one is
    strict), or, when its types are lax, by pydantic's; then the contract's rules column-wise.
    RequestValidationError names the first problems (at most MAX_PROBLEMS)."""
    strict = _strict_records(records) if records is not None else None
    if strict is not None and len(strict) == len(raws):
        columns = _columns(list(map(msgspec.structs.astuple, strict)))
    else:
        columns = _columns(_record_values(raws))
    try:
        return contract.validate_columns(columns, len(raws)), len(raws)
    except contract.ContractViolation as violation:
        raise _record_problems(raws, violation.row) from None


def _strict_records(records: msgspec.Raw) -> list[Any] | None:
    """Every record in the contract's own types, or None when any is lax or bad."""
    try:
        return _RECORDS.decode(records)
    except msgspec.DecodeError:
        return None


def _record_values(raws: list[msgspec.Raw]) -> list[tuple[Any, ...]]:
    """Each record's values in the contract's order, one record at a time: strict, else lax;
    RequestValidationError at the first record neither takes."""
    values: list[tuple[Any, ...]] = []
    for row, raw in enumerate(raws):
        try:
            values.append(_FEATURES(_RECORD.decode(raw)))
        except msgspec.DecodeError:
            lax = _lax_record(raw)
            if lax is None:
                # The records before it may break a rule: named first, in order.
                raise _record_problems(raws, min(row, _first_breaking(values, row))) from None
            values.append(tuple(lax.get(name) for name in contract.FEATURES))
    return values


def _columns(values: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """Records' values in the contract's order as columns, in C (not per value)."""
    if not values:
        return {name: [] for name in contract.FEATURES}
    return dict(zip(contract.FEATURES, map(list, zip(*values, strict=True)), strict=True))


def _first_breaking(values: list[tuple[Any, ...]], count: int) -> int:
    """The first record of these that breaks a rule of the contract (`count`: none does)."""
    try:
        contract.validate_columns(_columns(values), count)
    except contract.ContractViolation as violation:
        return violation.row
    return count


@dataclass(frozen=True)
class Batch:
    """A batch's records as validated, normalised columns, their count, and their keys."""

    columns: dict[str, Sequence[Any]]
    count: int
    keys: RecordKeys | None = None


def read_batch(body: bytes, maximum: int) -> Batch:
    """A batch body's records as validated, normalised columns, their count and keys, in the
    order that keeps a bad one cheap: the envelope, the count against `maximum`, then each
    record, then the keys. RequestValidationError names the problems; NotABatch for a body
    that is no batch."""
    raw = batch_raws(body)
    check_count(len(raw.each), maximum)
    columns, count = records_columns(raw.each, raw.records)
    return Batch(columns, count, batch_keys(raw.keys, count))


def batch_records(body: bytes) -> Batch | None:
    """A valid `BatchRequest` body's records as validated, normalised columns and their count;
    None for a body whose problems are named by a 422."""
    try:
        return read_batch(body, _MOST)
    except (NotABatch, RequestValidationError):
        return None


def _lax_record(raw: msgspec.Raw) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = RECORD_TYPES.validate_json(bytes(raw))
    except ValidationError:
        return None
    return record


def _record_problems(raws: list[msgspec.Raw], first: int) -> RequestValidationError:
    """What is wrong with the records from `first` on, by the models' own validation, as
    FastAPI would name it (`features.<record>.<field>`): the first MAX_PROBLEMS problems,
    then one line saying where checking stopped."""
    problems: list[dict[str, Any]] = []
    for row in range(first, len(raws)):
        try:
            CrimeFeatures.model_validate_json(bytes(raws[row]))
        except ValidationError as error:
            for item in error.errors(include_input=False, include_url=False):
                problems.append({**item, "loc": ("body", "features", row, *item["loc"])})
        if len(problems) >= MAX_PROBLEMS:
            return RequestValidationError(_stopped(problems, row, len(raws)))
    if not problems:  # valid one by one: only a parser disagreement gets here
        problems.append(
            {"type": "value_error", "loc": ("body", "features", first), "msg": "invalid record"}
        )
    return RequestValidationError(problems)


def _stopped(problems: list[dict[str, Any]], row: int, count: int) -> list[dict[str, Any]]:
    kept = problems[:MAX_PROBLEMS]
    unchecked = f"; records {row + 1} to {count - 1} were not checked" if row + 1 < count else ""
    cut = len(problems) - len(kept)
    more = f"{cut} more problems of record {row} not listed" if cut else ""
    return [
        *kept,
        {
            "type": "too_many_errors",
            "loc": ("body", "features"),
            "msg": f"validation stopped after {MAX_PROBLEMS} problems"
            + (f" ({more})" if more else "")
            + unchecked,
        },
    ]


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


async def parse_batch(request: Request, maximum: int) -> Batch:
    """A `BatchRequest`'s records as validated columns, their count and keys. In this order, so a
    bad batch costs little whatever it holds: the body's size (the edge), the envelope, the
    number of records against `maximum`, then each record validated once, stopping at the
    first problems."""
    body = await request.body()
    if body and _is_json(request.headers.get("content-type")):
        try:
            return read_batch(body, maximum)
        except NotABatch:
            pass  # not a batch at all: named below as FastAPI would
    await parse(request, BatchRequest)  # raises: the body is no batch
    raise AssertionError("unreachable: a body that is no batch does not parse as one")


def _python_value(body: bytes, is_json: bool) -> Any:
    if not body:
        return None
    if not is_json:
        return body
    try:
        return json.loads(body)
    except RecursionError:
        raise _too_deep() from None
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
