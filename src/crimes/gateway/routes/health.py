"""Welcome, liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from crimes.gateway.routes.deps import MetricsDep, PredictorDep

router = APIRouter(tags=["health"])


@router.get("/", summary="Welcome")
async def welcome() -> dict[str, str]:
    return {
        "message": "Bienvenido a la API de predicción del código FBI de crímenes de Chicago. "
        "Welcome to the Chicago crimes FBI code prediction API: POST /predict, docs at /docs."
    }


@router.get("/health/live", summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "live"}


@router.get("/health/ready", summary="At least one model service can answer")
async def ready(predictor: PredictorDep) -> Any:
    models = {}
    for kind, service in predictor.services.items():
        version = service.state.transformation_version
        # Answering needs the model's transformation too (it is fetched in the background).
        loaded = bool(version and predictor.transformations.cached(version))
        models[kind] = {**service.state.as_dict(), "transformation_loaded": loaded}
    ready = any(m["ready"] and m["transformation_loaded"] for m in models.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not ready", "models": models},
    )


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
