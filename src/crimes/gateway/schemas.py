"""The gateway's request and response bodies; the features are the contract's own schema."""

from __future__ import annotations

from typing import Annotated, Any, Final, NotRequired

from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from crimes import contract
from crimes.contract import CrimeFeatures

EXAMPLE: Final = contract.EXAMPLE_RECORD


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"features": dict(EXAMPLE)}]}
    )

    features: CrimeFeatures


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The upper bound is set per deployment (settings); this is the hard ceiling.
    features: list[CrimeFeatures] = Field(min_length=1, max_length=100_000)


class PredictResponse(BaseModel):
    """The reference's answer: one FBI code per model, null when that model failed."""

    dtc_fbi_code_output: str | None
    lda_fbi_code_output: str | None


class ModelAnswer(BaseModel):
    fbi_code: str | None
    status: str
    reason: str | None = None
    model_version: str | None = None
    transformation_version: str | None = None
    latency_ms: float | None = None
    probabilities: dict[str, float] | None = None


class VerboseAnswer(BaseModel):
    dtc: ModelAnswer
    lda: ModelAnswer
    unknown_categories: list[str]
    cached: bool


class ErrorBody(BaseModel):
    detail: Any


def _types_adapter() -> TypeAdapter[Any]:
    """`BatchRequest`'s shape and types only, validated straight into plain dicts: the batch
    hot path. The contract's rules (text normalisation, lengths, ranges) then run column-wise
    in `contract.validate_columns`, the same check the model services apply to raw records.

    The same types as `CrimeFeatures` (strict booleans, required and optional fields, no extra
    keys) as TypedDicts, so pydantic builds no model object per record. Together with the
    column check it only ever answers "valid" for a body the models accept, with their values
    (tests compare them); anything refused is parsed again with the models, which name the
    problems.
    """
    typed_dict: Any = TypedDict  # built from the contract at run time, not a static type
    fields: dict[str, Any] = {}
    for name, info in CrimeFeatures.model_fields.items():
        # The type and its strictness; the rules (bounds, lengths, normalisation) are the
        # column check's.
        strict = [item for item in info.metadata if isinstance(item, Strict)]
        annotation: Any = Annotated[(info.annotation, *strict)] if strict else info.annotation
        fields[name] = annotation if info.is_required() else NotRequired[annotation]
    record = typed_dict("CrimeFeaturesRow", fields)
    record.__pydantic_config__ = ConfigDict(extra="forbid")
    batch_metadata = BatchRequest.model_fields["features"].metadata
    records: Any = list[record]  # type: ignore[valid-type]
    batch = typed_dict("BatchRows", {"features": Annotated[(records, *batch_metadata)]})
    batch.__pydantic_config__ = ConfigDict(extra="forbid")
    return TypeAdapter(batch)


BATCH_TYPES = _types_adapter()


def batch_columns(body: bytes) -> tuple[dict[str, list[Any]], int] | None:
    """A valid `BatchRequest` body's records as validated, normalised columns and their count
    (the values `model_dump` gives, column by column); None for any body the fast path does
    not accept (its problems are for the models to name)."""
    try:
        rows: list[dict[str, Any]] = BATCH_TYPES.validate_json(body)["features"]
    except ValidationError:
        return None
    try:
        return contract.validate_columns(contract.feature_columns(rows), len(rows)), len(rows)
    except contract.ContractViolation:
        return None
