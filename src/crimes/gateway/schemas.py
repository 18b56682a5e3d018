"""The gateway's request and response bodies; the features are the contract's own schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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
