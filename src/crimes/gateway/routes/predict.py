"""`POST /predict` (the reference's contract), `/predict/batch`, and the verbose `/v2/predict`.

`/predict` and `/predict/batch` are called by the edge directly (`edge.hot`): they parse their
bodies and serialize their answers themselves (`bodies`); their `response_model`s and
`openapi_extra` bodies keep the OpenAPI schema complete. The API key of all three is the edge's
to check, before their bodies are read.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel

from crimes.feedback.keys import RecordKeys
from crimes.gateway.bodies import json_response, parse, parse_batch
from crimes.gateway.edge import hot
from crimes.gateway.predict import BatchResult, ModelResult, Predictor
from crimes.gateway.schemas import (
    BatchRequest,
    ErrorBody,
    ModelAnswer,
    PredictRequest,
    PredictResponse,
    VerboseAnswer,
)
from crimes.gateway.settings import GatewaySettings
from crimes.protocol.outcomes import Outcome, http_status

router = APIRouter(tags=["predict"])

FAILED: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "both model services failed"}
}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a body the route parses itself (its schema is added to the
    components by the app's OpenAPI builder)."""
    return {
        "requestBody": {
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
            "required": True,
        },
        # What FastAPI documents for a route with parameters (these have none it can see).
        "responses": {
            "422": {
                "description": "Validation Error",
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/HTTPValidationError"}
                    }
                },
            }
        },
    }


def _headers(result: BatchResult) -> dict[str, str]:
    headers = {}
    for kind, model in result.models.items():
        if model.model_version:
            headers[f"X-Model-Version-{kind.upper()}"] = model.model_version
        if model.transformation_version:
            headers["X-Transformation-Version"] = model.transformation_version
    if result.failures:
        headers["X-Partial-Failure"] = header_value(
            "; ".join(f"{kind}={reason}" for kind, reason in result.failures.items())
        )
    if result.cached:
        headers["X-Cache"] = "hit"
    return headers


# A header value holds printable ASCII only (a newline would end the header: an invalid
# answer, or a header of the client's choosing), and stays short.
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")
MAX_HEADER_VALUE = 256


def header_value(text: str) -> str:
    """Text from elsewhere (a model service's error) made safe to send as a header value."""
    return _UNPRINTABLE.sub(" ", text)[:MAX_HEADER_VALUE].strip()


def _all_failed(result: BatchResult) -> None:
    if not result.answered:
        raise HTTPException(
            # Nothing answered: the outcome of the prediction as a whole, as HTTP says it.
            status_code=http_status(Outcome.UNAVAILABLE),
            detail={
                "message": "no model service answered",
                "failures": {
                    k: {"status": str(m.outcome), "reason": m.reason}
                    for k, m in result.models.items()
                },
            },
        )


def _key(body: PredictRequest) -> RecordKeys | None:
    return None if body.key is None else RecordKeys.of([body.key])


def _code(model: ModelResult, row: int) -> str | None:
    return model.labels[row] if model.outcome is Outcome.OK and model.labels is not None else None


def _codes(model: ModelResult, rows: int) -> list[str | None]:
    if model.outcome is Outcome.OK and model.labels is not None:
        return list(model.labels)  # as many as rows: ModelService.infer checks
    return [None] * rows


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=FAILED,
    summary="FBI code of one crime record from both models",
    openapi_extra=request_body(PredictRequest),
)
@router.post("/predict/", response_model=PredictResponse, include_in_schema=False)
@hot
async def predict(request: Request) -> Response:
    body = await parse(request, PredictRequest)
    predictor: Predictor = request.app.state.predictor
    result = await predictor.predict_one(body.features.model_dump(), record_key=_key(body))
    _all_failed(result)
    return json_response(
        {
            "dtc_fbi_code_output": _code(result.models["dtc"], 0),
            "lda_fbi_code_output": _code(result.models["lda"], 0),
        },
        _headers(result),
    )


@router.post(
    "/predict/batch",
    response_model=list[PredictResponse],
    responses=FAILED,
    summary="FBI codes of many crime records, answered in the same order",
    openapi_extra=request_body(BatchRequest),
)
@hot
async def predict_batch(request: Request) -> Response:
    settings: GatewaySettings = request.app.state.settings
    predictor: Predictor = request.app.state.predictor
    # Counted against the maximum before any record is validated.
    maximum = predictor.max_batch_records(settings.max_batch_records)
    batch = await parse_batch(request, maximum)
    count = batch.count
    result = await predictor.predict(batch.columns, count, keys=batch.keys)
    _all_failed(result)
    dtc = _codes(result.models["dtc"], count)
    lda = _codes(result.models["lda"], count)
    # The same bytes as serializing the list of answers; each distinct pair encoded once.
    content = "[" + ",".join(map(_answer_json, dtc, lda)) + "]"
    return Response(content.encode(), media_type="application/json", headers=_headers(result))


@functools.lru_cache(maxsize=4096)
def _answer_json(dtc: str | None, lda: str | None) -> str:
    return json.dumps(
        {"dtc_fbi_code_output": dtc, "lda_fbi_code_output": lda},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _answer(model: ModelResult, probabilities: bool) -> ModelAnswer:
    probs = None
    if probabilities and model.probabilities is not None and model.classes is not None:
        probs = {c: float(p) for c, p in zip(model.classes, model.probabilities[0], strict=True)}
    return ModelAnswer(
        fbi_code=_code(model, 0),
        status=str(model.outcome),
        reason=model.reason,
        model_version=model.model_version,
        transformation_version=model.transformation_version,
        latency_ms=None if model.latency_ms is None else round(model.latency_ms, 3),
        probabilities=probs,
    )


@router.post(
    "/v2/predict",
    response_model=VerboseAnswer,
    responses=FAILED,
    summary="Verbose: per model the code, status, versions, latency (and probabilities)",
    openapi_extra=request_body(PredictRequest),
)
async def predict_verbose(
    request: Request,
    response: Response,
    probabilities: Annotated[bool, Query(description="Add class probabilities.")] = False,
) -> Any:
    # Not a hot path (FastAPI reads the query), but the body is parsed like the others: one
    # parser, one set of 422s, bounded whatever the body holds.
    body = await parse(request, PredictRequest)
    predictor: Predictor = request.app.state.predictor
    result = await predictor.predict_one(body.features.model_dump(), probabilities, _key(body))
    _all_failed(result)
    response.headers.update(_headers(result))
    return VerboseAnswer(
        dtc=_answer(result.models["dtc"], probabilities),
        lda=_answer(result.models["lda"], probabilities),
        unknown_categories=result.unknown[0] if result.unknown else [],
        cached=result.cached,
    )
