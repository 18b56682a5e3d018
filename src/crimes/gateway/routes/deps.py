"""Dependency aliases of the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from crimes.gateway.metrics import GatewayMetrics
from crimes.gateway.predict import Predictor
from crimes.gateway.replicas import ReplicaBoard


async def _predictor(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.predictor
    return predictor


async def _metrics(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


async def _replicas(request: Request) -> ReplicaBoard:
    board: ReplicaBoard = request.app.state.replicas
    return board


PredictorDep = Annotated[Predictor, Depends(_predictor)]
MetricsDep = Annotated[GatewayMetrics, Depends(_metrics)]
ReplicasDep = Annotated[ReplicaBoard, Depends(_replicas)]
