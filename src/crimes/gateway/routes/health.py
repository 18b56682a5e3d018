"""Welcome, liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from crimes.gateway.predict import Predictor
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


@router.get("/health/ready", summary="Ready or not, and why not in one word")
async def ready(predictor: PredictorDep) -> Any:
    # One word, never an address or a version: the probe is open to anyone who reaches it
    # (what each replica serves is /models', behind the key).
    reason = _not_ready_because(predictor)
    if reason is None:
        return {"status": "ready"}
    return JSONResponse(status_code=503, content={"status": "not ready", "reason": reason})


def _not_ready_because(predictor: Predictor) -> str | None:
    """None when at least one model can answer (its service is ready and the transformation
    it names is loaded, fetched in the background) and the start-up fetches that compete with
    answers are over (the drift references)."""
    reason = "no_model_service"
    for service in predictor.services.values():
        if not service.state.ready:
            continue
        version = service.state.transformation_version
        if version and predictor.transformations.cached(version):
            drift = predictor.drift
            return None if drift is None or drift.started() else "starting"
        reason = "no_transformation"
    return reason


# On the gateway's port only when the deployment gives Prometheus no port of its own.
metrics_router = APIRouter(tags=["health"])


@metrics_router.get("/metrics", summary="Prometheus metrics")
async def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
