"""The FastAPI application: a tiny module; the routes live in `routes/`, the core in `predict`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from crimes import registry
from crimes.gateway.backends import ModelService
from crimes.gateway.cache import PredictionCache
from crimes.gateway.metrics import GatewayMetrics
from crimes.gateway.predict import Predictor
from crimes.gateway.routes import health, models, predict
from crimes.gateway.settings import GatewaySettings
from crimes.gateway.transformations import Transformations
from crimes.logs import get_logger

log = get_logger(__name__)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = {
            kind: ModelService(
                kind=kind,
                model_name=registry.MODELS[kind],
                address=address,
                deadline_seconds=settings.deadline_seconds,
                retries=settings.retries,
            )
            for kind, address in (("dtc", settings.dtc_address), ("lda", settings.lda_address))
        }
        metrics = GatewayMetrics()
        cache = PredictionCache(settings.redis_url, settings.cache_ttl_seconds)
        predictor = Predictor(services, Transformations(settings.tracking_uri), metrics, cache)
        app.state.settings = settings
        app.state.metrics = metrics
        app.state.predictor = predictor
        refresher = asyncio.create_task(_refresh_forever(predictor, settings.refresh_seconds))
        log.info("gateway.started", dtc=settings.dtc_address, lda=settings.lda_address)
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
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
    app.middleware("http")(_observe)
    # Known before the lifespan runs, so the body limit holds from the first request.
    app.state.settings = settings
    return app


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


async def _observe(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    limit = request.app.state.settings.max_body_bytes
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        response: Response = JSONResponse(
            status_code=413,
            content={"detail": [{"field": "body", "message": f"larger than {limit} bytes"}]},
        )
    else:
        response = await call_next(request)
    metrics: Any = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        metrics.requests.labels(name, str(response.status_code)).inc()
        metrics.latency.labels(name).observe(time.perf_counter() - started)
    return response
