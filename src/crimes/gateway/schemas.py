"""The gateway's request and response bodies; the features are the contract's own schema."""

from __future__ import annotations

from typing import Annotated, Any, Final, NotRequired

from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter
from typing_extensions import TypedDict

from crimes import contract
from crimes.contract import CrimeFeatures
from crimes.feedback.keys import RecordKey

EXAMPLE: Final = contract.EXAMPLE_RECORD


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"features": dict(EXAMPLE)}]}
    )

    features: CrimeFeatures
    # Never a feature: what joins the answer with the record's published FBI code later.
    key: RecordKey | None = Field(
        default=None, description="The record's portal id and/or case number (optional)."
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The upper bound is set per deployment (settings); this is the hard ceiling.
    features: list[CrimeFeatures] = Field(min_length=1, max_length=100_000)
    keys: list[RecordKey] | None = Field(
        default=None,
        min_length=1,
        max_length=100_000,
        description="Each record's portal id and/or case number (optional; as many as "
        "`features`, in the same order).",
    )


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


def _record_types() -> TypeAdapter[Any]:
    """`CrimeFeatures`' shape and types only, validated straight into a plain dict: the lax
    side of the batch path, for a record msgspec's stricter types refuse (`4.0` or `"4"` for
    an integer, as the models take them). The contract's rules (text normalisation, lengths,
    ranges) then run column-wise in `contract.validate_columns`, the same check the model
    services apply to raw records.

    The same types as `CrimeFeatures` (strict booleans, required and optional fields, no extra
    keys) as a TypedDict, so pydantic builds no model object per record; with the column check
    it only ever answers "valid" for a record the models accept, with their values (tests
    compare them).
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
    return TypeAdapter(record)


RECORD_TYPES = _record_types()
