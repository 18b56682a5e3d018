"""Dependency aliases of the routes."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from crimes.gateway.metrics import GatewayMetrics
from crimes.gateway.predict import Predictor
from crimes.gateway.settings import GatewaySettings


async def _predictor(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.predictor
    return predictor


async def _metrics(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


def check_api_key(request: Request, x_api_key: str | None) -> None:
    """When the deployment sets an API key, the predict endpoints require it."""
    settings: GatewaySettings = request.app.state.settings
    expected = settings.api_key
    if expected is not None and not secrets.compare_digest(
        (x_api_key or "").encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(status_code=401, detail="missing or wrong X-API-Key header")


async def require_api_key(
    request: Request, x_api_key: Annotated[str | None, Header()] = None
) -> None:
    """`check_api_key` as a dependency. (`async def`: a plain `def` dependency would run in
    the thread pool on every request.)"""
    check_api_key(request, x_api_key)


# The X-API-Key header as FastAPI documents `require_api_key`'s parameter, for the routes that
# check the key themselves (routes/body.py), without solving a dependency per request.
API_KEY_PARAMETER: dict[str, object] = {
    "in": "header",
    "name": "x-api-key",
    "required": False,
    "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "X-Api-Key"},
}


PredictorDep = Annotated[Predictor, Depends(_predictor)]
MetricsDep = Annotated[GatewayMetrics, Depends(_metrics)]
