"""The gateway's request and response bodies; the features are the contract's own schema."""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

from crimes.contract import CrimeFeatures

EXAMPLE: dict[str, Any] = {
    "arrest": False,
    "beat": 412,
    "community_area": 46,
    "description": "THEFT / RECOVERY - AUTOMOBILE",
    "dia_mes": 4,
    "dia_semana": 1,
    "district": 4,
    "domestic": False,
    "hora": 5,
    "iucr": "0930",
    "latitude": 41.743747398,
    "location_description": "STREET",
    "longitude": -87.566115082,
    "mes": 6,
    "primary_type": "MOTOR VEHICLE THEFT",
    "ward": 7,
}


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"features": EXAMPLE}]}
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


def _rows_adapter() -> TypeAdapter[Any]:
    """`BatchRequest` validated straight into plain dicts, for the batch hot path.

    The same annotations and constraints as `CrimeFeatures` and `BatchRequest.features`, as
    TypedDicts: pydantic builds no model object per record and no dump is needed after. It only
    ever answers "valid" for a body the models accept (tests compare them); anything it rejects
    is parsed again with the models, which name the problems.
    """
    typed_dict: Any = TypedDict  # built from the contract at run time, not a static type
    fields: dict[str, Any] = {}
    for name, info in CrimeFeatures.model_fields.items():
        annotation: Any = (
            Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        )
        fields[name] = annotation if info.is_required() else NotRequired[annotation]
    record = typed_dict("CrimeFeaturesRow", fields)
    record.__pydantic_config__ = ConfigDict(extra="forbid")
    batch_metadata = BatchRequest.model_fields["features"].metadata
    records: Any = list[record]  # type: ignore[valid-type]
    batch = typed_dict("BatchRows", {"features": Annotated[(records, *batch_metadata)]})
    batch.__pydantic_config__ = ConfigDict(extra="forbid")
    return TypeAdapter(batch)


BATCH_ROWS = _rows_adapter()
# The fields a client may leave out (null when absent, as `model_dump` gives them).
OPTIONAL_FEATURES = tuple(
    name for name, info in CrimeFeatures.model_fields.items() if not info.is_required()
)
