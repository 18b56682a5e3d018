"""The FastAPI application: a tiny module; the routes live in `routes/`, the core in `predict`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import fastapi
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crimes import registry
from crimes.gateway.backends import ModelService
from crimes.gateway.cache import PredictionCache
from crimes.gateway.drift import DriftCollector, DriftMonitor
from crimes.gateway.metrics import GatewayMetrics
from crimes.gateway.predict import Predictor
from crimes.gateway.routes import health, models, predict
from crimes.gateway.routes.deps import PROTECTED_PATHS, WRONG_KEY, key_accepted
from crimes.gateway.schemas import BatchRequest, PredictRequest
from crimes.gateway.settings import GatewaySettings
from crimes.gateway.shadow import Shadow
from crimes.gateway.transformation_store import TransformationStore
from crimes.ops import requests, tracing
from crimes.ops.logs import get_logger
from crimes.registry import artifacts

log = get_logger(__name__)

REQUEST_ID_HEADER = requests.HEADER.encode()


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        artifacts.bound_mlflow_calls(settings.mlflow_timeout_seconds, settings.mlflow_max_retries)
        services = {
            kind: ModelService(
                model_name=registry.MODELS[kind],
                address=address,
                deadline_seconds=settings.deadline_seconds,
                retries=settings.retries,
                tls=settings.model_tls,
            )
            for kind, address in (("dtc", settings.dtc_address), ("lda", settings.lda_address))
        }
        metrics = GatewayMetrics()
        cache = PredictionCache(settings.redis_url, settings.cache_ttl_seconds)
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
        await shadow.start()
        app.state.metrics = metrics
        app.state.predictor = predictor
        app.state.services = services
        refresher = asyncio.create_task(_refresh_forever(predictor, settings.refresh_seconds))
        log.info(
            "gateway.started",
            dtc=settings.dtc_address,
            lda=settings.lda_address,
            challengers=settings.challenger_addresses(),
            shadow_share=settings.shadow_share if shadow.enabled else 0,
        )
        gc.freeze()  # see TransformationStore._finished
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await shadow.stop()
            await cache.close()
            for service in services.values():
                await service.close()

    app = FastAPI(
        title="Chicago crimes: FBI code prediction",
        description=(
            "Validates a crime record with the feature contract, transforms it once and asks "
            "both models (Decision Tree and LDA, each its own gRPC service) for its FBI code."
        ),
        version="1.0.0",
        lifespan=lifespan,
    )
    app.include_router(predict.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(ObserveMiddleware)
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
    return schema


async def _refresh_forever(predictor: Predictor, every: float) -> None:
    while True:
        try:
            await predictor.refresh()
        except Exception as error:  # a refresh must never kill the loop
            log.warning("gateway.refresh_failed", error=str(error))
        await asyncio.sleep(every)


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    problems = []
    for item in error.errors():
        location = [str(part) for part in item.get("loc", ()) if part != "body"]
        problems.append(
            {
                "field": ".".join(location) or "body",
                "message": item.get("msg", "invalid"),
                "type": item.get("type", "invalid"),
            }
        )
    return JSONResponse(status_code=422, content={"detail": problems})


async def _unexpected_error(request: Request, error: Exception) -> Response:
    # A bug must still answer JSON without a traceback; the log has the details.
    log.error("gateway.unexpected_error", path=request.url.path, error=repr(error))
    return JSONResponse(status_code=500, content={"detail": "internal error"})


def _hot_routes(app: FastAPI) -> dict[str, APIRoute]:
    """The prediction routes that skip the router: `POST /predict`, `/predict/`,
    `/predict/batch`. They parse their bodies and check the API key themselves (routes/body.py)
    and take only the request, so FastAPI's per-request work for them (routing, dependency
    solving, its exception and exit-stack middlewares) buys nothing: measured, about a third
    of the gateway's CPU per single-record request."""
    hot = (predict.predict, predict.predict_batch)
    return {
        route.path: route
        for route in app.routes
        if isinstance(route, APIRoute) and route.endpoint in hot and "POST" in route.methods
    }


async def _serve_hot(route: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
    """A hot route's endpoint, its errors answered by the handlers FastAPI would use; any
    other exception goes up to the app's error handler, as from the router."""
    scope["route"] = route
    request = Request(scope, receive)
    try:
        response: Response = await route.endpoint(request)
    except RequestValidationError as error:
        response = await _validation_error(request, error)
    except HTTPException as error:
        response = await http_exception_handler(request, error)
    await response(scope, receive, send)


class _BodyTooLarge(fastapi.HTTPException):
    """The body grew past the limit while it was being received: answered as a 413 by the
    handler of every route's HTTP errors (FastAPI passes HTTPExceptions through its body
    parsing), or by the middleware if it escapes."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, [{"field": "body", "message": f"larger than {limit} bytes"}])


def _too_large(limit: int) -> Response:
    return JSONResponse(status_code=413, content={"detail": _BodyTooLarge(limit).detail})


class ObserveMiddleware:
    """Request count and latency per route template and status, the API key and the body size
    limit (401 and 413 before the body is read), and the bound on prediction requests in
    flight (503 with Retry-After past it: memory stays bounded under any load). Plain ASGI: no
    per-request task."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._hot: dict[str, APIRoute] | None = None
        self.in_flight = 0

    def _hot_route(self, scope: Scope) -> APIRoute | None:
        if scope["method"] != "POST":
            return None
        if self._hot is None:
            self._hot = _hot_routes(scope["app"])
        return self._hot.get(scope["path"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope["app"].state
        settings: GatewaySettings = state.settings
        limit = settings.max_body_bytes
        status = 500  # unless the app answers: an exception escaping it is a 500
        too_large = False
        client_id: bytes | None = None
        api_key: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                too_large = value.isdigit() and int(value) > limit
            elif name == REQUEST_ID_HEADER:
                client_id = value
            elif name == b"x-api-key":
                api_key = value
        predicting = scope["method"] == "POST" and scope["path"] in PROTECTED_PATHS
        # The key before a byte of the body is read: a client without it cannot make the
        # gateway receive (or parse) anything.
        refused = predicting and not key_accepted(settings, api_key)
        request_id = requests.accepted(client_id)
        token = requests.current.set(request_id)
        tracing.annotate(**{"crimes.request_id": request_id})
        echoed = (REQUEST_ID_HEADER, request_id.encode())

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        received = 0

        async def counted_receive() -> Message:
            # A body without Content-Length (chunked) is counted as it arrives.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        shed = predicting and self.in_flight >= settings.max_in_flight
        if predicting and not shed:
            self.in_flight += 1
        try:
            if refused:
                response = JSONResponse(status_code=401, content={"detail": WRONG_KEY})
                await response(scope, receive, observed_send)
            elif shed:
                response = JSONResponse(
                    status_code=503,
                    content={"detail": f"overloaded: {self.in_flight} requests in flight"},
                    headers={"Retry-After": "1"},
                )
                await response(scope, receive, observed_send)
                shed_metrics: Any = getattr(state, "metrics", None)
                if shed_metrics is not None:
                    shed_metrics.shed.inc()
            elif too_large:
                await _too_large(limit)(scope, receive, observed_send)
            else:
                hot = self._hot_route(scope)
                try:
                    if hot is not None:
                        await _serve_hot(hot, scope, counted_receive, observed_send)
                    else:
                        await self.app(scope, counted_receive, observed_send)
                except _BodyTooLarge:
                    # Routes read the whole body before they answer: nothing was sent yet.
                    await _too_large(limit)(scope, receive, observed_send)
        finally:
            if predicting and not shed:
                self.in_flight -= 1
            elapsed = time.perf_counter() - started
            name = getattr(scope.get("route"), "path", "unmatched")
            metrics: Any = getattr(state, "metrics", None)
            if metrics is not None:
                metrics.labelled(metrics.requests, name, str(status)).inc()
                metrics.labelled(metrics.latency, name).observe(elapsed)
            # The access log: at debug level (CRIMES_LOG_LEVEL=DEBUG), free when off.
            log.debug(
                "gateway.request",
                method=scope["method"],
                route=name,
                status=status,
                ms=round(elapsed * 1000, 3),
            )
            requests.current.reset(token)
