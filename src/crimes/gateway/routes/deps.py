"""Dependency aliases of the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from crimes.gateway.metrics import GatewayMetrics
from crimes.gateway.predict import Predictor
from crimes.gateway.settings import GatewaySettings


def _predictor(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.predictor
    return predictor


def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def _metrics(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


PredictorDep = Annotated[Predictor, Depends(_predictor)]
SettingsDep = Annotated[GatewaySettings, Depends(_settings)]
MetricsDep = Annotated[GatewayMetrics, Depends(_metrics)]
