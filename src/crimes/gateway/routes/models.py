"""`GET /models`: what each model service serves, replica by replica; `GET /drift`. Both
answer from state the gateway keeps (refreshed in the background), never by asking the model
services on the caller's time."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from crimes.gateway.routes.deps import PredictorDep, ReplicasDep

router = APIRouter(tags=["models"])


@router.get("/models", summary="Each model service: replicas, versions, origin, its challenger")
async def list_models(predictor: PredictorDep, board: ReplicasDep) -> dict[str, Any]:
    return {
        kind: {
            "model": service.model_name,
            "address": service.address,
            "replicas": board.replicas[kind],
            "ready_replicas": sum(1 for r in board.replicas[kind] if r["ready"]),
            # When the replicas above were last asked (seconds since the epoch; None: not yet).
            "refreshed_at": board.refreshed_at,
            # Its challenger deployment, shadowing live records (None: no challenger set).
            "challenger": predictor.shadow.describe(kind) if predictor.shadow else None,
            # Drift of the records served against its training split: the worst features.
            "drift": predictor.drift.worst(kind) if predictor.drift else None,
        }
        for kind, service in board.services.items()
    }


@router.get(
    "/drift",
    summary="Per model: the served version, its window of served records and each feature's "
    "PSI against its training split",
)
async def drift(predictor: PredictorDep) -> dict[str, Any]:
    return predictor.drift.report() if predictor.drift else {}
