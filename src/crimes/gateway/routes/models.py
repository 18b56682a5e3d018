"""`GET /models`: what each model service serves, replica by replica."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from crimes.gateway.backends import ModelService, replica_states
from crimes.gateway.routes.deps import PredictorDep

router = APIRouter(tags=["models"])


@router.get("/models", summary="Each model service: replicas, versions, origin, its challenger")
async def list_models(predictor: PredictorDep, request: Request) -> dict[str, Any]:
    services: dict[str, ModelService] = request.app.state.services
    kinds = list(services)
    found = await asyncio.gather(*(replica_states(services[k]) for k in kinds))
    return {
        kind: {
            "model": services[kind].model_name,
            "address": services[kind].address,
            "replicas": replicas,
            "ready_replicas": sum(1 for r in replicas if r["ready"]),
            # Its challenger deployment, shadowing live records (None: no challenger set).
            "challenger": predictor.shadow.describe(kind) if predictor.shadow else None,
            # Drift of the records served against its training split: the worst features.
            "drift": predictor.drift.worst(kind) if predictor.drift else None,
        }
        for kind, replicas in zip(kinds, found, strict=True)
    }


@router.get(
    "/drift",
    summary="Per model: the served version, its window of served records and each feature's "
    "PSI against its training split",
)
async def drift(predictor: PredictorDep) -> dict[str, Any]:
    return predictor.drift.report() if predictor.drift else {}
