"""One request traceable end to end, on real processes: the gateway and both model services with
debug access logs and OpenTelemetry traces exported over OTLP/HTTP to a test collector.

- `X-Request-ID`: accepted when valid (else replaced by a generated one), echoed, in the
  gateway's log line for the request and in both model services' lines for the calls it caused.
- One trace per request: the gateway's server span, the transformation and a client span per
  model call as its children, each model call a server span (and its `predict`) in the service.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from crimes import registry
from crimes.gateway.schemas import EXAMPLE
from crimes.local.launch import LocalProcess
from tests.support import otlp
from tests.support.system import serving_system

pytestmark = pytest.mark.e2e

SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
# Each model service's traces are named after the registered model it serves.
MODEL_SERVICES = {kind: f"crimes-model-{name}" for kind, name in registry.MODELS.items()}


@pytest.fixture(scope="module")
def collector() -> Iterator[otlp.Collector]:
    with otlp.collecting() as collector:
        yield collector


@pytest.fixture(scope="module")
def observed(
    trained: dict[str, Any], collector: otlp.Collector, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LocalProcess]]:
    """Gateway and model services, debug logs on, traces sent to the collector; no prediction
    cache, so that every request reaches the model services."""
    folder = tmp_path_factory.mktemp("traced")
    env = {
        "CRIMES_LOG_LEVEL": "DEBUG",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with serving_system(folder, env=env) as started:
        with httpx.Client(base_url=started["gateway"].url, timeout=10, trust_env=False) as http:
            deadline = time.monotonic() + 30
            while http.post("/predict", json={"features": EXAMPLE}).status_code != 200:
                assert time.monotonic() < deadline, "the gateway never answered"
                time.sleep(0.5)
        yield started


@pytest.fixture
def http(observed: dict[str, LocalProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=observed["gateway"].url, timeout=10, trust_env=False) as client:
        yield client


def served_for(service: LocalProcess, request_id: str) -> dict[str, Any]:
    """The service's access log line for a call that served `request_id`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for entry in service.logs():
            if entry.get("event") == "request.served" and request_id in str(
                entry.get("request_id", "")
            ).split(","):
                return entry
        time.sleep(0.1)
    raise AssertionError(f"{service.kind} logged no call for {request_id}")


def test_a_clients_request_id_is_echoed_and_in_every_parts_log(
    http: httpx.Client, observed: dict[str, LocalProcess]
) -> None:
    request_id = f"curl-{time.time_ns()}"
    response = http.post(
        "/predict", json={"features": EXAMPLE}, headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    access = observed["gateway"].wait_for_log("gateway.request", request_id=request_id, timeout=10)
    assert access["route"] == "/predict"
    assert access["status"] == 200
    for kind in ("dtc", "lda"):
        line = served_for(observed[kind], request_id)
        assert line["method"] == "ModelInfer"
        assert line["version"]


def test_an_id_is_generated_when_none_or_an_unsafe_one_is_sent(
    http: httpx.Client, observed: dict[str, LocalProcess]
) -> None:
    sent = [None, 'has spaces and "quotes"', "x" * 129, ""]
    for value in sent:
        headers = {} if value is None else {"X-Request-ID": value}
        response = http.post("/predict", json={"features": EXAMPLE}, headers=headers)
        assert response.status_code == 200
        generated = response.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated), (value, generated)
        observed["gateway"].wait_for_log("gateway.request", request_id=generated, timeout=10)
        served_for(observed["dtc"], generated)
    # Errors carry it too: a 422 and a 404 answer with an id a client can quote.
    bad = http.post("/predict", json={"features": {}}, headers={"X-Request-ID": "bad-1"})
    assert bad.status_code == 422
    assert bad.headers["x-request-id"] == "bad-1"
    assert http.get("/nowhere").headers["x-request-id"]


def trace_of(collector: otlp.Collector, request_id: str) -> list[otlp.Span]:
    """The spans of the trace whose gateway server span served `request_id`, once complete."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        spans = collector.received()
        roots = [
            s
            for s in spans
            if s.service == "crimes-gateway"
            and s.kind == SERVER
            and s.attributes.get("crimes.request_id") == request_id
        ]
        if roots:
            tree = [s for s in spans if s.trace_id == roots[0].trace_id]
            services = {s.service for s in tree if s.name == "predict"}
            if services == set(MODEL_SERVICES.values()):
                return tree
        time.sleep(0.2)
    seen = sorted({(s.service, s.name) for s in collector.received()})
    raise AssertionError(f"no complete trace for {request_id}; spans seen: {seen}")


def test_one_trace_per_request_from_the_gateway_into_both_model_services(
    http: httpx.Client, collector: otlp.Collector
) -> None:
    request_id = f"traced-{time.time_ns()}"
    response = http.post(
        "/predict", json={"features": EXAMPLE}, headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 200
    tree = trace_of(collector, request_id)
    by_id = {s.span_id: s for s in tree}
    (root,) = [s for s in tree if not s.parent_id]
    assert root.service == "crimes-gateway"
    assert root.kind == SERVER
    assert "/predict" in root.name

    def ancestors(span: otlp.Span) -> list[otlp.Span]:
        chain = []
        while span.parent_id:
            span = by_id[span.parent_id]
            chain.append(span)
        return chain

    (transform,) = [s for s in tree if s.name == "transform"]
    assert transform.service == "crimes-gateway"
    assert root in ancestors(transform)
    calls = [s for s in tree if s.service == "crimes-gateway" and s.kind == CLIENT]
    assert len(calls) == 2, [s.name for s in calls]
    assert all("ModelInfer" in s.name and root in ancestors(s) for s in calls)
    for service in MODEL_SERVICES.values():
        (server,) = [s for s in tree if s.service == service and s.kind == SERVER]
        assert "ModelInfer" in server.name
        assert by_id[server.parent_id] in calls
        (predict,) = [s for s in tree if s.service == service and s.name == "predict"]
        assert predict.parent_id == server.span_id
        assert predict.attributes["rows"] == 1
    # Health checks, readiness polls and scrapes make no traces: only predictions do.
    noise = ("/health", "/metrics", "Health/", "ModelReady", "ModelMetadata", "ServerReady")
    assert not [s.name for s in collector.received() if any(n in s.name for n in noise)]
