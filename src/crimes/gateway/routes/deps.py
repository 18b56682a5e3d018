"""Dependency aliases of the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from crimes.gateway.metrics import GatewayMetrics
from crimes.gateway.predict import Predictor


async def _predictor(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.predictor
    return predictor


async def _metrics(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


PredictorDep = Annotated[Predictor, Depends(_predictor)]
MetricsDep = Annotated[GatewayMetrics, Depends(_metrics)]
