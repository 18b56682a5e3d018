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


# The routes the API key guards (when the deployment sets one).
PROTECTED_PATHS = frozenset({"/predict", "/predict/", "/predict/batch", "/v2/predict"})
WRONG_KEY = "missing or wrong X-API-Key header"


def key_accepted(settings: GatewaySettings, x_api_key: str | bytes | None) -> bool:
    """Whether a request's X-API-Key is the deployment's (always, when it sets none)."""
    expected = settings.api_key
    if expected is None:
        return True
    given = x_api_key.encode() if isinstance(x_api_key, str) else (x_api_key or b"")
    return secrets.compare_digest(given, expected.get_secret_value().encode())


def check_api_key(request: Request, x_api_key: str | None) -> None:
    """When the deployment sets an API key, the predict endpoints require it. (The gateway's
    middleware already refused a wrong key before the body was read: this guards the routes
    wherever they are mounted.)"""
    if not key_accepted(request.app.state.settings, x_api_key):
        raise HTTPException(status_code=401, detail=WRONG_KEY)


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
