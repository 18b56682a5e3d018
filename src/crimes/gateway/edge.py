"""The gateway's HTTP edge: one ASGI layer that does, once and in this order, for every request:
its request id and its client (the peer's address, which the drift windows count); the API
key of every route but the health probes (the one place it is checked, before a byte of the
body is read); the body, read whole within its limits (413 past the size, counted as it
arrives when the body is chunked; 408 past the time, so a client that sends a byte a second
holds nothing for long); the bound on predictions and reports in flight, counting only
requests whose body is in (503 with Retry-After past it, so memory stays bounded under any
load); then the route,
the prediction routes straight to their endpoints (they parse their bodies into typed values
in one pass, `bodies`); and last, the metrics and access log.

Plain ASGI, no per-request task, outermost (`app.GatewayApp`): prediction routes skip
Starlette's layers, FastAPI's router and its dependency solving (measured: the router and
dependencies about a third of the gateway's CPU per single-record request, Starlette's layers
about 6 % more). An error no handler answers becomes the app's JSON 500, here, as Starlette's
error middleware would make it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crimes.gateway.bodies import MAX_PROBLEMS
from crimes.gateway.settings import GatewaySettings
from crimes.ops import requests, tracing
from crimes.ops.logs import get_logger

log = get_logger("crimes.gateway.edge")

REQUEST_ID_HEADER: Final = requests.HEADER.encode()
# The routes anyone who reaches the gateway may call: the health probes (the orchestrator's
# and the load balancer's, which send no key). Every other route needs the key when the
# deployment sets one.
OPEN_PATHS: Final = frozenset({"/health/live", "/health/ready"})
# The routes the in-flight bound counts: the predictions, and the reports (theirs are cheap
# reads of kept state, but a flood of them still takes the event loop).
PREDICT_PATHS: Final = frozenset({"/predict", "/predict/", "/predict/batch", "/v2/predict"})
COUNTED_PATHS: Final = PREDICT_PATHS | {"/models", "/drift"}
WRONG_KEY: Final = "missing or wrong X-API-Key header"
# A problem's message is cut here (pydantic's name a few choices at most; a bound all the same).
MAX_MESSAGE: Final = 200
# The key in the OpenAPI document: one scheme, required by every route but OPEN_PATHS.
API_KEY_SCHEME: Final[dict[str, object]] = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
}


def key_accepted(settings: GatewaySettings, given: bytes | None) -> bool:
    """Whether a request's X-API-Key is the deployment's (always, when it sets none)."""
    expected = settings.api_key
    if expected is None:
        return True
    return secrets.compare_digest(given or b"", expected.get_secret_value().encode())


@dataclass(frozen=True, slots=True)
class Head:
    """What the edge reads of a request's headers, in one pass."""

    content_length: int | None
    request_id: bytes | None
    api_key: bytes | None

    @classmethod
    def of(cls, headers: Iterable[tuple[bytes, bytes]]) -> Head:
        length = request_id = api_key = None
        for name, value in headers:
            if name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name == REQUEST_ID_HEADER:
                request_id = value
            elif name == b"x-api-key":
                api_key = value
        return cls(length, request_id, api_key)


class BodyTooLarge(HTTPException):
    """The body grew past the limit while it was being received: answered as a 413 by the
    handler of every route's HTTP errors (FastAPI passes HTTPExceptions through its body
    parsing), or by the edge if it escapes."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, [{"field": "body", "message": f"larger than {limit} bytes"}])


def _too_large(limit: int) -> Response:
    return JSONResponse(status_code=413, content={"detail": BodyTooLarge(limit).detail})


class _Exchange:
    """The answer's side of one request: its status, and the request id echoed."""

    __slots__ = ("_send", "echoed", "started", "status")

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self.echoed = (REQUEST_ID_HEADER, request_id.encode())
        self.status = 500  # unless the app answers: an exception escaping it is a 500
        self.started = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), self.echoed]
        await self._send(message)


class BodyTimedOut(Exception):
    """The body did not arrive within the setting's time."""


class ClientGone(Exception):
    """The client disconnected before its body was in."""


async def _read_body(receive: Receive, limit: int, timeout: float) -> bytes:
    """The whole body (chunked or not) within `timeout`, refused once it passes `limit`."""
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise BodyTooLarge(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise BodyTimedOut from None


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app: the body already read, then the client's own messages (its
    disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _timed_out(seconds: float) -> Response:
    return JSONResponse(
        status_code=408,
        content={"detail": f"the request body did not arrive within {seconds:g} s"},
        headers={"Connection": "close"},
    )


class Edge:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._hot: dict[str, APIRoute] | None = None
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        head = Head.of(scope["headers"])
        request_id = requests.accepted(head.request_id)
        token = requests.current.set(request_id)
        peer = scope.get("client")
        client = requests.client.set(peer[0] if peer else "")
        tracing.annotate(**{"crimes.request_id": request_id})
        exchange = _Exchange(send, request_id)
        try:
            await self._admit(scope, receive, exchange, head)
        except Exception as error:
            if exchange.started:  # answered already (the app's error middleware did, say)
                raise
            await _internal_error(scope, receive, exchange.send, error)
        finally:
            self._observe(scope, exchange.status, time.perf_counter() - started)
            requests.current.reset(token)
            requests.client.reset(client)

    async def _admit(self, scope: Scope, receive: Receive, exchange: _Exchange, head: Head) -> None:
        settings: GatewaySettings = scope["app"].state.settings
        counted = scope["path"] in COUNTED_PATHS
        refusal = self._refusal(settings, head, guarded=scope["path"] not in OPEN_PATHS)
        if refusal is None:
            try:
                body = await _read_body(
                    receive, settings.max_body_bytes, settings.body_timeout_seconds
                )
            except BodyTooLarge:
                refusal = _too_large(settings.max_body_bytes)
            except BodyTimedOut:
                refusal = _timed_out(settings.body_timeout_seconds)
            except ClientGone:
                return
        # The in-flight bound counts requests whose body is in: a slow client holds no slot.
        if refusal is None and counted:
            refusal = self._overloaded(scope, settings)
        if refusal is not None:
            await refusal(scope, receive, exchange.send)
            return
        if counted:
            self.in_flight += 1
        try:
            await self._serve(scope, _replay(body, receive), exchange)
        finally:
            if counted:
                self.in_flight -= 1

    def _refusal(self, settings: GatewaySettings, head: Head, guarded: bool) -> Response | None:
        """The answer a request gets before its body is read, if it gets one."""
        if guarded and not key_accepted(settings, head.api_key):
            return JSONResponse(status_code=401, content={"detail": WRONG_KEY})
        if head.content_length is not None and head.content_length > settings.max_body_bytes:
            return _too_large(settings.max_body_bytes)
        return None

    def _overloaded(self, scope: Scope, settings: GatewaySettings) -> Response | None:
        if self.in_flight < settings.max_in_flight:
            return None
        metrics: Any = getattr(scope["app"].state, "metrics", None)
        if metrics is not None:
            metrics.shed.inc()
        return JSONResponse(
            status_code=503,
            content={"detail": f"overloaded: {self.in_flight} requests in flight"},
            headers={"Retry-After": "1"},
        )

    async def _serve(self, scope: Scope, receive: Receive, exchange: _Exchange) -> None:
        hot = self._hot_route(scope)
        if hot is not None:
            await _serve_hot(hot, scope, receive, exchange.send)
        else:
            await self.app(scope, receive, exchange.send)

    def _hot_route(self, scope: Scope) -> APIRoute | None:
        if scope["method"] != "POST":
            return None
        if self._hot is None:
            self._hot = _hot_routes(scope["app"])
        return self._hot.get(scope["path"])

    def _observe(self, scope: Scope, status: int, elapsed: float) -> None:
        name = getattr(scope.get("route"), "path", "unmatched")
        metrics: Any = getattr(scope["app"].state, "metrics", None)
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


def _hot_routes(app: FastAPI) -> dict[str, APIRoute]:
    """The prediction routes served without the router: `POST /predict`, `/predict/`,
    `/predict/batch` (their endpoints take only the request and parse their bodies)."""
    return {
        route.path: route
        for route in app.routes
        if isinstance(route, APIRoute)
        and "POST" in route.methods
        and getattr(route.endpoint, "hot", False)
    }


def hot(endpoint: Any) -> Any:
    """Mark a route's endpoint as one the edge calls directly (it takes only the request)."""
    endpoint.hot = True
    return endpoint


async def _serve_hot(route: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
    """A hot route's endpoint, its errors answered by the handlers FastAPI would use; any
    other exception goes up to the app's error handler, as from the router."""
    scope["route"] = route
    request = Request(scope, receive)
    try:
        response: Response = await route.endpoint(request)
    except RequestValidationError as error:
        response = await validation_error(request, error)
    except StarletteHTTPException as error:
        response = await http_exception_handler(request, error)
    await response(scope, receive, send)


async def _internal_error(scope: Scope, receive: Receive, send: Send, error: Exception) -> None:
    """The app's answer to an exception no handler took (its `Exception` handler's: a JSON 500
    that names nothing inside), or a bare JSON 500 when it has none."""
    handler = scope["app"].exception_handlers.get(Exception)
    if handler is None:
        log.error("gateway.unexpected_error", path=scope["path"], error=repr(error))
        response: Response = JSONResponse(status_code=500, content={"detail": "internal error"})
    else:
        response = await handler(Request(scope, receive), error)
    await response(scope, receive, send)


async def validation_error(request: Request, error: Exception) -> Response:
    """A 422 that names each field and its problem: the first MAX_PROBLEMS of them, so the
    answer stays a few KB whatever the body held."""
    assert isinstance(error, RequestValidationError)
    found = error.errors()
    problems = [_problem(item) for item in found[: MAX_PROBLEMS + 1]]
    if len(found) > MAX_PROBLEMS + 1 or (
        len(found) == MAX_PROBLEMS + 1 and problems[-1]["type"] != "too_many_errors"
    ):
        problems[MAX_PROBLEMS:] = [
            {
                "field": "body",
                "message": f"{len(found) - MAX_PROBLEMS} more problems not listed",
                "type": "too_many_errors",
            }
        ]
    return JSONResponse(status_code=422, content={"detail": problems})


def _problem(item: Mapping[str, Any]) -> dict[str, Any]:
    location = [str(part) for part in item.get("loc", ()) if part != "body"]
    return {
        "field": ".".join(location) or "body",
        "message": str(item.get("msg", "invalid"))[:MAX_MESSAGE],
        "type": item.get("type", "invalid"),
    }
