"""`POST /predict` (the reference's contract), `/predict/batch`, and the verbose `/v2/predict`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.responses import JSONResponse

from crimes.gateway.predict import BatchResult, ModelResult
from crimes.gateway.routes.deps import PredictorDep, SettingsDep, require_api_key
from crimes.gateway.schemas import (
    BatchRequest,
    ErrorBody,
    ModelAnswer,
    PredictRequest,
    PredictResponse,
    VerboseAnswer,
)

router = APIRouter(tags=["predict"], dependencies=[Depends(require_api_key)])

FAILED: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "both model services failed"}
}


def _headers(response: Response, result: BatchResult) -> None:
    for kind, model in result.models.items():
        if model.model_version:
            response.headers[f"X-Model-Version-{kind.upper()}"] = model.model_version
        if model.transformation_version:
            response.headers["X-Transformation-Version"] = model.transformation_version
    if result.failures:
        response.headers["X-Partial-Failure"] = "; ".join(
            f"{kind}={reason}" for kind, reason in result.failures.items()
        )[:512]
    if result.cached:
        response.headers["X-Cache"] = "hit"


def _all_failed(result: BatchResult) -> None:
    if all(model.status != "ok" for model in result.models.values()):
        raise HTTPException(
            status_code=503,
            detail={
                "message": "no model service answered",
                "failures": {
                    k: {"status": m.status, "reason": m.reason} for k, m in result.models.items()
                },
            },
        )


def _code(model: ModelResult, row: int) -> str | None:
    return model.labels[row] if model.status == "ok" and model.labels is not None else None


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=FAILED,
    summary="FBI code of one crime record from both models",
)
@router.post("/predict/", response_model=PredictResponse, include_in_schema=False)
async def predict(request: PredictRequest, predictor: PredictorDep, response: Response) -> Any:
    result = await predictor.predict_one(request.features.model_dump())
    _all_failed(result)
    _headers(response, result)
    return PredictResponse(
        dtc_fbi_code_output=_code(result.models["dtc"], 0),
        lda_fbi_code_output=_code(result.models["lda"], 0),
    )


@router.post(
    "/predict/batch",
    response_model=list[PredictResponse],
    responses=FAILED,
    summary="FBI codes of many crime records, answered in the same order",
)
async def predict_batch(
    request: BatchRequest, predictor: PredictorDep, settings: SettingsDep, response: Response
) -> Any:
    if len(request.features) > settings.max_batch_records:
        return JSONResponse(
            status_code=422,
            content={
                "detail": [
                    {
                        "field": "features",
                        "message": f"at most {settings.max_batch_records} records per batch, "
                        f"got {len(request.features)}",
                        "type": "too_long",
                    }
                ]
            },
        )
    result = await predictor.predict([r.model_dump() for r in request.features])
    _all_failed(result)
    _headers(response, result)
    return [
        PredictResponse(
            dtc_fbi_code_output=_code(result.models["dtc"], i),
            lda_fbi_code_output=_code(result.models["lda"], i),
        )
        for i in range(len(request.features))
    ]


def _answer(model: ModelResult, probabilities: bool) -> ModelAnswer:
    probs = None
    if probabilities and model.probabilities is not None and model.classes is not None:
        probs = {c: float(p) for c, p in zip(model.classes, model.probabilities[0], strict=True)}
    return ModelAnswer(
        fbi_code=_code(model, 0),
        status=model.status,
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
)
async def predict_verbose(
    request: PredictRequest,
    predictor: PredictorDep,
    response: Response,
    probabilities: Annotated[bool, Query(description="Add class probabilities.")] = False,
) -> Any:
    result = await predictor.predict_one(request.features.model_dump(), probabilities)
    _all_failed(result)
    _headers(response, result)
    return VerboseAnswer(
        dtc=_answer(result.models["dtc"], probabilities),
        lda=_answer(result.models["lda"], probabilities),
        unknown_categories=result.unknown[0] if result.unknown else [],
        cached=result.cached,
    )
