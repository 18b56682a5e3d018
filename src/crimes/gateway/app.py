"""The FastAPI application: a tiny module; the routes live in `routes/`, the core in `predict`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from wsgiref.simple_server import WSGIServer

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import start_http_server
from starlette.types import ASGIApp, Receive, Scope, Send

from crimes import registry
from crimes.feedback.exporter import AccuracyBoard, AccuracyCollector
from crimes.feedback.settings import PredictionLogSettings
from crimes.feedback.writer import LakeSink, PredictionLog
from crimes.gateway.backends import ModelService
from crimes.gateway.cache import PredictionCache
from crimes.gateway.drift import DriftCollector, DriftMonitor
from crimes.gateway.edge import API_KEY_SCHEME, OPEN_PATHS, Edge, validation_error
from crimes.gateway.metrics import GatewayMetrics
from crimes.gateway.predict import Predictor
from crimes.gateway.replicas import ReplicaBoard
from crimes.gateway.routes import health, models, predict
from crimes.gateway.schemas import BatchRequest, PredictRequest
from crimes.gateway.settings import GatewaySettings
from crimes.gateway.shadow import Shadow
from crimes.gateway.transformation_store import TransformationStore
from crimes.ops import tracing
from crimes.ops.logs import get_logger
from crimes.registry import artifacts

log = get_logger(__name__)


class GatewayApp(FastAPI):
    """FastAPI with the edge outermost: every request meets the edge first, and the prediction
    routes it serves itself skip Starlette's own layers (its error middleware wraps every
    message sent: about 6 % of a single-record request); the other routes go through FastAPI
    as usual. When traced, the edge is the app's first middleware instead, inside the tracing
    one, so that a request's span covers it."""

    def __init__(self, *, traced: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if traced:
            self.add_middleware(Edge)
            self.edge: ASGIApp = super().__call__
        else:
            self.edge = Edge(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await self.edge(scope, receive, send)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    app = GatewayApp(
        traced=tracing.enabled(),
        title="Chicago crimes: FBI code prediction",
        description=(
            "Validates a crime record with the feature contract, transforms it once and asks "
            "both models (Decision Tree and LDA, each its own gRPC service) for its FBI code."
        ),
        version="1.0.0",
        lifespan=_lifespan(settings),
        docs_url="/docs" if settings.docs else None,
        redoc_url="/redoc" if settings.docs else None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    app.include_router(predict.router)
    app.include_router(models.router)
    app.include_router(health.router)
    if settings.metrics_port is None:
        app.include_router(health.metrics_router)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
    if tracing.enabled():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # Outermost: the request's span covers the body limit, the request id and the routes.
        FastAPIInstrumentor.instrument_app(app, excluded_urls="/health/.*,/metrics")
    # Known before the lifespan runs, so the body limit holds from the first request.
    app.state.settings = settings

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _lifespan(settings: GatewaySettings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The parts the gateway runs while it serves: made at start, stopped in order."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        artifacts.bound_mlflow_calls(settings.mlflow_timeout_seconds, settings.mlflow_max_retries)
        services = _services(settings)
        metrics = GatewayMetrics()
        cache = PredictionCache(settings.redis_url, settings.cache_ttl_seconds)
        predictor, shadow = _predictor(settings, services, metrics, cache)
        predictor.log = shadow.log = _prediction_log(metrics)
        if predictor.log is not None:
            predictor.log.start()
        await shadow.start()
        board = ReplicaBoard(services)
        app.state.metrics, app.state.predictor, app.state.replicas = metrics, predictor, board
        background = _background(settings, predictor, board, metrics)
        exporter = _metrics_server(settings, metrics)
        log.info(
            "gateway.started",
            dtc=settings.dtc_address,
            lda=settings.lda_address,
            challengers=settings.challenger_addresses(),
            shadow_share=settings.shadow_share if shadow.enabled else 0,
            metrics_port=exporter.server_port if exporter else None,
        )
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if exporter is not None:
                exporter.shutdown()
                exporter.server_close()
            await shadow.stop()
            if predictor.log is not None:
                # Everything it holds, written before the process ends (its own thread).
                await asyncio.to_thread(predictor.log.stop)
            await cache.close()
            for service in services.values():
                await service.close()

    return lifespan


def _background(
    settings: GatewaySettings, predictor: Predictor, board: ReplicaBoard, metrics: GatewayMetrics
) -> list[asyncio.Task[None]]:
    """The refreshes that run beside the answers: the services' metadata, the replica board,
    and the served accuracy read from the lake."""
    background = [
        asyncio.create_task(_refresh_forever(predictor, settings.refresh_seconds)),
        asyncio.create_task(
            board.keep_fresh(settings.models_refresh_seconds, settings.refresh_seconds)
        ),
    ]
    if settings.accuracy_refresh_seconds:
        background.append(
            asyncio.create_task(_accuracy_forever(metrics, settings.accuracy_refresh_seconds))
        )
    return background


def _prediction_log(metrics: GatewayMetrics) -> PredictionLog | None:
    """The prediction log, to the data lake (`CRIMES_LAKE_*`), unless it is turned off."""
    settings = PredictionLogSettings()
    if not settings.enabled:
        return None
    from crimes.lake.storage import Lake

    return PredictionLog(LakeSink(Lake()), settings, metrics.registry)


def _metrics_server(settings: GatewaySettings, metrics: GatewayMetrics) -> WSGIServer | None:
    """Prometheus' own port, when the deployment gives it one (a thread of its own)."""
    if settings.metrics_port is None:
        return None
    server, _ = start_http_server(
        settings.metrics_port, addr=settings.metrics_host, registry=metrics.registry
    )
    return server


def _services(settings: GatewaySettings) -> dict[str, ModelService]:
    return {
        kind: ModelService(
            model_name=registry.MODELS[kind],
            address=address,
            deadline_seconds=settings.deadline_seconds,
            retries=settings.retries,
            tls=settings.model_tls,
        )
        for kind, address in (("dtc", settings.dtc_address), ("lda", settings.lda_address))
    }


def _predictor(
    settings: GatewaySettings,
    services: dict[str, ModelService],
    metrics: GatewayMetrics,
    cache: PredictionCache,
) -> tuple[Predictor, Shadow]:
    """The core, with its shadow and its drift monitor."""
    predictor = Predictor(services, TransformationStore(settings.tracking_uri), metrics, cache)
    shadow = _shadow(settings, predictor, metrics)
    predictor.shadow = shadow
    predictor.drift = DriftMonitor(
        services,
        settings.tracking_uri,
        window_records=settings.drift_window_records,
        min_records=settings.drift_min_records,
    )
    metrics.registry.register(DriftCollector(predictor.drift))
    return predictor, shadow


def _shadow(settings: GatewaySettings, predictor: Predictor, metrics: GatewayMetrics) -> Shadow:
    challengers = {
        kind: ModelService(
            model_name=registry.MODELS[kind],
            address=address,
            deadline_seconds=settings.shadow_deadline_seconds,
            retries=0,
            tls=settings.model_tls,
        )
        for kind, address in settings.challenger_addresses().items()
    }
    return Shadow(
        challengers,
        predictor.shadow_transform,
        metrics,
        share=settings.shadow_share,
        capacity_records=settings.shadow_queue_records,
    )


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the request bodies the predict routes parse themselves (they
    reference them with `openapi_extra`): their component schemas come from FastAPI itself,
    through a route per body that declares it and is then left out of the paths."""
    bodies = APIRouter()

    @bodies.post("/_docs/predict-request")
    async def predict_request(body: PredictRequest) -> None:  # never served
        return None

    @bodies.post("/_docs/batch-request")
    async def batch_request(body: BatchRequest) -> None:  # never served
        return None

    schema = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=[*app.routes, *bodies.routes],
    )
    for route in bodies.routes:
        schema["paths"].pop(getattr(route, "path"), None)  # noqa: B009
    schema.setdefault("components", {})["securitySchemes"] = API_KEY_SCHEME
    for path, operations in schema["paths"].items():
        if path not in OPEN_PATHS:
            for operation in operations.values():
                operation["security"] = [{name: []} for name in API_KEY_SCHEME]
    return schema


async def _accuracy_forever(metrics: GatewayMetrics, every: float) -> None:
    """The latest evaluation's figures on /metrics, read from the lake in a thread."""
    from crimes.lake.storage import Lake

    board = AccuracyBoard(Lake())
    metrics.registry.register(AccuracyCollector(board))
    while True:
        await asyncio.to_thread(board.refresh)
        await asyncio.sleep(every)


async def _refresh_forever(predictor: Predictor, every: float) -> None:
    while True:
        try:
            await predictor.refresh()
        except Exception as error:  # a refresh must never kill the loop
            log.warning("gateway.refresh_failed", error=str(error))
        await asyncio.sleep(every)


async def _unexpected_error(request: Request, error: Exception) -> Response:
    # A bug must still answer JSON without a traceback; the log has the details.
    log.error("gateway.unexpected_error", path=request.url.path, error=repr(error))
    return JSONResponse(status_code=500, content={"detail": "internal error"})
