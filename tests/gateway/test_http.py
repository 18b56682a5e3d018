"""The gateway's HTTP edge in-process (no model service needed): API key, body size limit,
field-naming 422s, welcome and liveness."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import SecretStr

from crimes.gateway.app import create_app
from crimes.gateway.edge import Edge
from crimes.gateway.schemas import EXAMPLE
from crimes.gateway.settings import GatewaySettings
from crimes.local.stack import free_port

KEYED = {"X-API-Key": "s3cret"}


@pytest.fixture
def client() -> Iterator[TestClient]:
    nowhere = f"ipv4:127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        dtc_address=nowhere,
        lda_address=nowhere,
        api_key=SecretStr("s3cret"),
        max_body_bytes=4096,
        deadline_seconds=0.3,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_the_api_key_guards_the_predict_endpoints(client: TestClient) -> None:
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = client.post("/predict", json={"features": EXAMPLE}, headers=headers)
        assert response.status_code == 401
        assert "X-API-Key" in response.json()["detail"]
    # With the key the request goes through to the models (none is up here: 503, named).
    response = client.post("/predict", json={"features": EXAMPLE}, headers={"X-API-Key": "s3cret"})
    assert response.status_code == 503
    assert set(response.json()["detail"]["failures"]) == {"dtc", "lda"}
    assert client.get("/health/live").status_code == 200  # health stays open


def test_bodies_over_the_limit_are_413(client: TestClient) -> None:
    response = client.post(
        "/predict/batch",
        json={"features": [EXAMPLE] * 50},
        headers={"X-API-Key": "s3cret"},
    )
    assert response.status_code == 413
    assert response.json()["detail"][0]["field"] == "body"


def test_a_chunked_body_is_counted_as_it_arrives_and_413_past_the_limit(
    client: TestClient,
) -> None:
    """No Content-Length to judge by: the bytes are counted as they are received."""
    chunks = json.dumps({"features": [EXAMPLE] * 50}).encode()

    def body() -> Iterator[bytes]:
        for start in range(0, len(chunks), 512):
            yield chunks[start : start + 512]

    for path in ("/predict/batch", "/predict", "/v2/predict"):
        response = client.post(
            path,
            content=body(),
            headers={"X-API-Key": "s3cret", "Content-Type": "application/json"},
        )
        assert response.status_code == 413, (path, response.text)
        assert response.json()["detail"][0]["field"] == "body"
    # Under the limit, chunked is fine (no model is up here: 503).
    small = json.dumps({"features": EXAMPLE}).encode()
    response = client.post(
        "/predict",
        content=iter([small[:100], small[100:]]),
        headers={"X-API-Key": "s3cret", "Content-Type": "application/json"},
    )
    assert response.status_code == 503


def test_validation_names_each_field(client: TestClient) -> None:
    bad = {**EXAMPLE, "beat": 0, "ward": "x"}
    response = client.post("/predict", json={"features": bad}, headers={"X-API-Key": "s3cret"})
    assert response.status_code == 422
    assert {p["field"] for p in response.json()["detail"]} == {"features.beat", "features.ward"}


def test_not_ready_without_models(client: TestClient) -> None:
    assert client.get("/health/ready").status_code == 503
    assert "Bienvenido" in client.get("/", headers=KEYED).json()["message"]


def test_the_openapi_schema_documents_the_bodies_the_routes_parse(client: TestClient) -> None:
    schema = client.get("/openapi.json", headers=KEYED).json()
    for path, model in (("/predict", "PredictRequest"), ("/predict/batch", "BatchRequest")):
        body = schema["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{model}"
        }
        assert model in schema["components"]["schemas"]
    assert "CrimeFeatures" in schema["components"]["schemas"]
    assert not [p for p in schema["paths"] if p.startswith("/_docs")]


def test_not_json_and_non_objects_are_422_naming_the_body(client: TestClient) -> None:
    key = {"X-API-Key": "s3cret"}
    for path in ("/predict", "/predict/batch"):
        response = client.post(
            path, content=b"{not json", headers={**key, "Content-Type": "application/json"}
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "json_invalid"
        for payload in (None, [1], 3, "x"):
            response = client.post(path, json=payload, headers=key)
            assert response.status_code == 422
            assert response.json()["detail"][0]["field"] == "body"
    response = client.post("/predict/batch", json={"features": [EXAMPLE, {**EXAMPLE, "hora": 99}]},
                           headers=key)  # fmt: skip
    assert [p["field"] for p in response.json()["detail"]] == ["features.1.hora"]


def test_metrics_count_requests_per_route_template_and_status(client: TestClient) -> None:
    # (With the key: without it, a 401 comes before the body is looked at.)
    client.post(
        "/predict/batch", json={"features": [EXAMPLE] * 50}, headers={"X-API-Key": "s3cret"}
    )
    client.post("/predict", json={}, headers={"X-API-Key": "s3cret"})
    client.get("/no/such/path", headers=KEYED)
    text = client.get("/metrics", headers=KEYED).text
    assert 'crimes_gateway_requests_total{route="unmatched",status="413"} 1.0' in text
    assert 'crimes_gateway_requests_total{route="/predict",status="422"} 1.0' in text
    assert 'crimes_gateway_requests_total{route="unmatched",status="404"} 1.0' in text


def test_the_key_is_checked_before_the_body_is_read(client: TestClient) -> None:
    """Without the key nothing of the body is read or parsed: broken JSON, an invalid record
    and a body of any size are all 401; with it, the body's own problems are answered."""
    for path in ("/predict", "/predict/batch", "/v2/predict"):
        broken = client.post(path, content=b"{", headers={"Content-Type": "application/json"})
        assert broken.status_code == 401
        assert client.post(path, json={"features": {"beat": 0}}).status_code == 401
        assert client.post(path, json={"features": EXAMPLE}).status_code == 401
        huge = client.post(path, content=b"x" * 10_000, headers={"X-API-Key": "wrong"})
        assert huge.status_code == 401
        keyed = client.post(
            path, content=b"{", headers={"Content-Type": "application/json", "X-API-Key": "s3cret"}
        )
        assert keyed.status_code == 422
    schema = client.get("/openapi.json", headers=KEYED).json()
    for path in ("/predict", "/predict/batch", "/v2/predict"):
        operation = schema["paths"][path]["post"]
        assert operation["security"] == [{"ApiKey": []}]
        assert "422" in operation["responses"]


def test_a_batch_over_the_documented_maximum_is_422_naming_features() -> None:
    nowhere = f"ipv4:127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        dtc_address=nowhere, lda_address=nowhere, max_batch_records=2, deadline_seconds=0.3
    )
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict/batch", json={"features": [EXAMPLE] * 3})
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/json"
        (problem,) = response.json()["detail"]
        assert problem["field"] == "features"
        assert problem["type"] == "too_long"
        assert "at most 2 records" in problem["message"]
        # At the maximum the batch goes through to the models (none is up here: 503).
        assert client.post("/predict/batch", json={"features": [EXAMPLE] * 2}).status_code == 503


def test_the_prediction_routes_answer_as_routed_ones(client: TestClient) -> None:
    """The prediction routes skip the router (edge.Edge): other methods still get
    the router's 405, the trailing-slash alias is served, and errors keep their handlers."""
    assert client.get("/predict", headers=KEYED).status_code == 405
    assert client.put("/predict/batch", json={}, headers=KEYED).status_code == 405
    for path in ("/predict", "/predict/"):
        response = client.post(path, json={"features": EXAMPLE}, headers={"X-API-Key": "s3cret"})
        assert response.status_code == 503, path  # the HTTPException handler's answer
        assert response.headers["content-type"] == "application/json"
    response = client.post("/predict/batch", json={"features": []}, headers={"X-API-Key": "s3cret"})
    assert response.status_code == 422  # the validation handler's answer, naming the field
    assert response.json()["detail"][0]["field"] == "features"
    metrics = client.get("/metrics", headers=KEYED).text
    assert 'route="/predict/",status="503"' in metrics
    assert 'route="/predict/batch",status="422"' in metrics


def test_prediction_requests_past_the_in_flight_bound_get_503_with_retry_after() -> None:
    """Model services that accept connections and never answer hold each request for its
    deadline; with two allowed in flight, the others are refused at once, and counted."""
    with socket.create_server(("127.0.0.1", 0)) as blackhole:
        address = f"ipv4:127.0.0.1:{blackhole.getsockname()[1]}"
        settings = GatewaySettings(
            dtc_address=address, lda_address=address, deadline_seconds=1.0, max_in_flight=2
        )
        with TestClient(create_app(settings)) as client:
            barrier = threading.Barrier(6)

            def ask() -> Any:
                barrier.wait()
                return client.post("/predict", json={"features": EXAMPLE})

            with ThreadPoolExecutor(6) as pool:
                answers = list(pool.map(lambda _: ask(), range(6)))
            shed = [a for a in answers if a.headers.get("Retry-After") == "1"]
            held = [a for a in answers if "Retry-After" not in a.headers]
            assert len(held) == 2  # the two in flight waited for the models' deadline
            assert len(shed) == 4
            assert all(a.status_code == 503 for a in answers)
            assert all(a.json()["detail"].startswith("overloaded") for a in shed)
            assert "crimes_gateway_shed_total 4.0" in client.get("/metrics", headers=KEYED).text
            # Once they are answered, requests are admitted again.
            assert "Retry-After" not in client.post("/predict", json={"features": EXAMPLE}).headers


def test_an_empty_api_key_is_no_key() -> None:
    """compose's local-only profile turns the key off with an empty value."""
    assert GatewaySettings(api_key=SecretStr("")).api_key is None
    assert GatewaySettings(api_key=SecretStr("k")).api_key == SecretStr("k")


def test_a_batch_larger_than_a_model_service_takes_is_422_before_any_call() -> None:
    """The gateway's maximum (1,000) is above what these services advertise (2 rows a call):
    the services' maximum holds, named in the answer."""
    nowhere = f"ipv4:127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        dtc_address=nowhere, lda_address=nowhere, deadline_seconds=0.3, refresh_seconds=3600
    )
    with TestClient(create_app(settings)) as client:
        predictor = client.app.state.predictor  # type: ignore[attr-defined]
        for service in predictor.services.values():
            deadline = time.monotonic() + 10
            while service.state.error is None:  # the first refresh is done
                assert time.monotonic() < deadline
                time.sleep(0.05)
            service.state = dataclasses.replace(service.state, max_batch_rows=2)
        response = client.post("/predict/batch", json={"features": [EXAMPLE] * 3})
        assert response.status_code == 422
        (problem,) = response.json()["detail"]
        assert problem["field"] == "features"
        assert "at most 2 records per batch, got 3" in problem["message"]
        assert client.post("/predict/batch", json={"features": [EXAMPLE] * 2}).status_code == 503


def test_the_reports_count_in_the_in_flight_bound_and_the_probes_do_not() -> None:
    """With the bound taken by predictions that have not answered yet, /models and /drift are
    refused like predictions (a flood of reports takes the same event loop); the probes are
    never refused for load (an orchestrator would restart a busy gateway). The edge alone,
    over routes that answer when told to."""

    async def scenario() -> dict[str, int]:
        release = asyncio.Event()

        async def routes(scope: Any, receive: Any, send: Any) -> None:
            if scope["path"] == "/predict":
                await release.wait()
            await JSONResponse({"path": scope["path"]})(scope, receive, send)

        edge = Edge(routes)
        gateway = SimpleNamespace(
            state=SimpleNamespace(settings=GatewaySettings(max_in_flight=2)), routes=[]
        )

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await edge({**scope, "app": gateway}, receive, send)

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            held = [asyncio.create_task(client.post("/predict", json={})) for _ in range(2)]
            while edge.in_flight < 2:
                await asyncio.sleep(0.001)
            found = {path: (await client.get(path)).status_code for path in PATHS}
            release.set()
            found["/predict"] = min(answer.status_code for answer in await asyncio.gather(*held))
            found["/models after"] = (await client.get("/models")).status_code
        return found

    assert asyncio.run(scenario()) == {
        "/models": 503,
        "/drift": 503,
        "/health/live": 200,
        "/health/ready": 200,
        "/predict": 200,
        "/models after": 200,
    }


PATHS = ("/models", "/drift", "/health/live", "/health/ready")


class Broken:
    """Stands in for a part of the gateway with a bug: every call raises."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("a bug")


def test_a_bug_answers_the_apps_json_500_on_edge_served_and_routed_paths() -> None:
    """A prediction route (served by the edge itself) and a routed report with a bug both
    answer the app's JSON 500 with the request id, and say nothing of the bug."""
    nowhere = f"ipv4:127.0.0.1:{free_port()}"
    settings = GatewaySettings(dtc_address=nowhere, lda_address=nowhere, deadline_seconds=0.3)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        predictor = app.state.predictor

        async def broken_prediction(*args: Any, **kwargs: Any) -> Any:
            raise ZeroDivisionError("a bug")

        predictor.predict_one = broken_prediction
        predictor.drift = SimpleNamespace(worst=Broken, report=Broken)
        for method, path in (("POST", "/predict"), ("GET", "/drift"), ("GET", "/models")):
            answer = client.request(
                method, path, json={"features": EXAMPLE}, headers={"X-Request-ID": "req-1"}
            )
            assert answer.status_code == 500, path
            assert answer.json() == {"detail": "internal error"}, path
            assert answer.headers["x-request-id"] == "req-1", path
    # The edge-served route answers it without the error reaching the server.
    with TestClient(app) as strict:
        app.state.predictor.predict_one = broken_prediction
        assert strict.post("/predict", json={"features": EXAMPLE}).status_code == 500
