"""The gateway end to end: real model services (gRPC) serving the champions the training DAG
registered, the gateway under uvicorn, real Redis, HTTP calls with httpx."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from crimes import contract, registry
from crimes.gateway.schemas import EXAMPLE
from crimes.lake import datasets
from crimes.lake.storage import Lake
from crimes.local import launch
from crimes.local.launch import LocalProcess
from crimes.settings import TrackingSettings
from tests.support.stack import YEAR
from tests.support.system import (
    every_replica_ready,
    gateway_env,
    gateway_metrics,
    listed_models,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def models(
    trained: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LocalProcess]]:
    folder = tmp_path_factory.mktemp("model-services")
    started = {kind: launch.serve(LocalProcess, kind, {}, folder) for kind in ("dtc", "lda")}
    try:
        for service in started.values():
            service.wait_healthy()
        yield started
    finally:
        for service in started.values():
            service.stop()


@pytest.fixture(scope="module")
def gateway(
    models: dict[str, LocalProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalProcess]:
    env = {
        "CRIMES_GATEWAY_DTC_ADDRESS": f"dns:///{models['dtc'].address}",
        "CRIMES_GATEWAY_LDA_ADDRESS": f"dns:///{models['lda'].address}",
        "CRIMES_GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0",
        "CRIMES_GATEWAY_TRACKING_URI": TrackingSettings().tracking_uri,
        "CRIMES_GATEWAY_DEADLINE_SECONDS": "2.5",
        "CRIMES_GATEWAY_MAX_BATCH_RECORDS": "500",
    }
    with launch.serving("gateway", env, tmp_path_factory.mktemp("gateway")) as service:
        yield service


@pytest.fixture(scope="module")
def http(gateway: LocalProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as client:
        # The first answer waits for the transformation to be fetched: warm it.
        deadline = time.monotonic() + 30
        while client.post("/predict", json={"features": EXAMPLE}).status_code != 200:
            assert time.monotonic() < deadline, "the gateway never answered"
            time.sleep(0.5)
        yield client


@pytest.fixture(scope="module")
def offline() -> dict[str, Any]:
    """The champions and the published test rows, to predict offline."""
    import mlflow

    final = datasets.load_final(Lake(), YEAR)
    mlflow.set_tracking_uri(TrackingSettings().tracking_uri)
    return {
        "final": final,
        **{
            kind: mlflow.sklearn.load_model(registry.model_uri(name))
            for kind, name in registry.MODELS.items()
        },
    }


def records(frame: Any) -> list[dict[str, Any]]:
    """Rows as a client would send them: JSON types, null for missing coordinates."""
    return [
        json.loads(json.dumps(r, default=float).replace("NaN", "null"))
        for r in frame.to_dict("records")
    ]


def test_the_reference_example(http: httpx.Client) -> None:
    for path in ("/predict", "/predict/"):
        response = http.post(path, json={"features": EXAMPLE})
        assert response.status_code == 200
        assert response.json() == {"dtc_fbi_code_output": "07", "lda_fbi_code_output": "07"}
        assert response.headers["X-Model-Version-DTC"]
        assert response.headers["X-Model-Version-LDA"]
        assert response.headers["X-Transformation-Version"].startswith("tf-")


def test_no_training_serving_skew_on_real_rows(http: httpx.Client, offline: dict[str, Any]) -> None:
    final = offline["final"]
    rows = final.features_test.head(300)
    # The fitted pipeline's own output (the ETL's X_test), not the serving transformation's.
    expected = final.X_test.head(300).to_numpy(dtype=np.float64)
    dtc = offline["dtc"].predict(expected)
    lda = offline["lda"].predict(expected)
    for i, record in enumerate(records(rows)):
        answer = http.post("/predict", json={"features": record}).json()
        assert answer == {"dtc_fbi_code_output": dtc[i], "lda_fbi_code_output": lda[i]}, record


def variant(record: dict[str, Any], i: int) -> dict[str, Any]:
    """The record as a careless client writes it: text in another case, padded with spaces."""
    cases = (str.lower, str.title, str.upper)
    changed = dict(record)
    for name in contract.TEXT_FEATURES:
        if isinstance(changed.get(name), str):
            changed[name] = f"{' ' * (i % 3)}{cases[i % 3](changed[name])}\t"
    return changed


def test_case_and_whitespace_variants_get_the_canonical_answers(
    http: httpx.Client, offline: dict[str, Any]
) -> None:
    final = offline["final"]
    rows = records(final.features_test.iloc[700:900])
    canonical = http.post("/predict/batch", json={"features": rows}).json()
    variants = [variant(r, i) for i, r in enumerate(rows)]
    assert variants != rows
    assert http.post("/predict/batch", json={"features": variants}).json() == canonical
    for i in range(0, len(rows), 20):  # and one by one, through /predict
        answer = http.post("/predict", json={"features": variants[i]}).json()
        assert answer == canonical[i], variants[i]
    # Nothing became an unknown category on the way.
    verbose = http.post("/v2/predict", json={"features": variants[0]}).json()
    plain = http.post("/v2/predict", json={"features": rows[0]}).json()
    assert verbose["unknown_categories"] == plain["unknown_categories"]


def test_batch_answers_in_order(http: httpx.Client, offline: dict[str, Any]) -> None:
    final = offline["final"]
    rows = final.features_test.iloc[300:700]
    matrix = final.X_test.iloc[300:700].to_numpy(dtype=np.float64)
    response = http.post("/predict/batch", json={"features": records(rows)})
    assert response.status_code == 200
    assert response.json() == [
        {"dtc_fbi_code_output": dtc, "lda_fbi_code_output": lda}
        for dtc, lda in zip(
            offline["dtc"].predict(matrix), offline["lda"].predict(matrix), strict=True
        )
    ]


def test_batch_above_the_documented_maximum_is_422(http: httpx.Client) -> None:
    response = http.post("/predict/batch", json={"features": [EXAMPLE] * 501})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "features"


def unknown_counts(gateway: LocalProcess) -> dict[str, float]:
    text = gateway_metrics(gateway)
    found = re.findall(
        r'^crimes_gateway_unknown_categories_total\{feature="(\w+)"\} (\S+)', text, re.M
    )
    return {feature: float(value) for feature, value in found}


def test_verbose_form(http: httpx.Client, gateway: LocalProcess) -> None:
    unseen = {**EXAMPLE, "iucr": "9999", "description": "SOMETHING NEW"}
    before = unknown_counts(gateway)
    response = http.post("/v2/predict", params={"probabilities": "true"}, json={"features": unseen})
    assert response.status_code == 200, response.text
    body = response.json()
    # The test data covers December only, so the example's June is unknown too.
    assert {"iucr", "description"} <= set(body["unknown_categories"])
    assert "primary_type" not in body["unknown_categories"]
    # ... and counted per feature in Prometheus.
    after = unknown_counts(gateway)
    for feature in body["unknown_categories"]:
        assert after[feature] == before.get(feature, 0) + 1, feature
    assert after.get("primary_type", 0) == before.get("primary_type", 0)
    for kind in ("dtc", "lda"):
        answer = body[kind]
        assert answer["status"] == "ok"
        assert answer["model_version"]
        assert answer["transformation_version"].startswith("tf-")
        assert answer["latency_ms"] > 0
        assert abs(sum(answer["probabilities"].values()) - 1) < 1e-6
        assert answer["fbi_code"] == max(answer["probabilities"], key=answer["probabilities"].get)


@pytest.mark.parametrize(
    ("features", "field"),
    [
        ({**EXAMPLE, "beat": "not a number"}, "features.beat"),
        ({**EXAMPLE, "ward": 100}, "features.ward"),
        ({**EXAMPLE, "hora": 24}, "features.hora"),
        ({**EXAMPLE, "iucr": "930"}, "features.iucr"),
        ({**EXAMPLE, "arrest": "maybe"}, "features.arrest"),
        ({k: v for k, v in EXAMPLE.items() if k != "mes"}, "features.mes"),
        ({**EXAMPLE, "colour": "red"}, "features.colour"),
    ],
)
def test_bad_records_are_422_naming_the_field(
    http: httpx.Client, features: dict[str, Any], field: str
) -> None:
    response = http.post("/predict", json={"features": features})
    assert response.status_code == 422
    assert field in [problem["field"] for problem in response.json()["detail"]]


def test_not_json_is_422(http: httpx.Client) -> None:
    response = http.post(
        "/predict", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"]


def test_models_shows_each_service(http: httpx.Client, models: dict[str, LocalProcess]) -> None:
    import mlflow

    client = mlflow.MlflowClient(TrackingSettings().tracking_uri)
    body = listed_models(http, every_replica_ready)
    for kind, name in registry.MODELS.items():
        champion = client.get_model_version_by_alias(name, registry.CHAMPION)
        (replica,) = body[kind]["replicas"]
        assert replica["address"] == models[kind].address
        assert replica["ready"] is True
        assert replica["model_version"] == str(champion.version)
        assert replica["mlflow_run_id"] == champion.run_id
        assert replica["source"] == "mlflow"
        assert replica["transformation_version"] == champion.tags["transformation_version"]


def test_health_metrics_docs_and_welcome(http: httpx.Client, gateway: LocalProcess) -> None:
    assert http.get("/health/live").json() == {"status": "live"}
    ready = http.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready"}
    # Prometheus' own port, as in every deployment: the API's has no /metrics.
    assert http.get("/metrics").status_code == 404
    metrics = gateway_metrics(gateway)
    assert "crimes_gateway_requests_total" in metrics
    assert 'crimes_gateway_model_calls_total{model="dtc"' in metrics
    assert http.get("/docs").status_code == 200
    assert "/predict" in http.get("/openapi.json").json()["paths"]
    assert "Bienvenido" in http.get("/").json()["message"]


DRIFT_OUTCOMES = ("drift.measuring", "drift.no_reference", "drift.reference_unavailable")


def test_ready_only_once_the_start_up_fetches_are_over(
    models: dict[str, LocalProcess], tmp_path: Any
) -> None:
    """The served versions' drift references are looked for before the gateway says ready:
    their fetch holds the interpreter for up to half a second, and a first request then
    missed its deadline on a slow machine (both models: 503)."""
    fresh = launch.serve(LocalProcess, "gateway", gateway_env(models), tmp_path)
    try:
        fresh.wait_healthy(ready=False)
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=fresh.url, timeout=10, trust_env=False) as client:
            # Asked often: the log is read the moment the answer turns ready.
            while client.get("/health/ready").status_code != 200:
                assert time.monotonic() < deadline, fresh.tail()
                time.sleep(0.005)
            looked_for = {e["model"] for e in fresh.logs() if e.get("event") in DRIFT_OUTCOMES}
            assert looked_for == {"dtc", "lda"}, fresh.tail()
            assert client.post("/predict", json={"features": EXAMPLE}).status_code == 200
    finally:
        fresh.stop()


def test_the_cache_answers_repeats_and_never_fails(http: httpx.Client) -> None:
    record = {**EXAMPLE, "hora": 6}
    http.post("/predict", json={"features": record})
    again = http.post("/predict", json={"features": record})
    assert again.headers.get("X-Cache") == "hit"
    assert again.json() == {"dtc_fbi_code_output": "07", "lda_fbi_code_output": "07"}


def test_fuzzed_requests_never_get_a_5xx(gateway: LocalProcess, http: httpx.Client) -> None:
    """Property-based: arbitrary bodies built around the schema, 1,000+ cases."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalar = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**12), max_value=10**12),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
    )
    value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3), max_leaves=4)
    field = st.sampled_from([*contract.FEATURES, "extra", ""])
    record = st.one_of(
        # The valid example with some fields changed, removed or added.
        st.dictionaries(field, value, max_size=4).map(lambda changes: {**EXAMPLE, **changes}),
        st.dictionaries(field, value, max_size=20),
        value,
    )
    body = st.one_of(
        st.builds(lambda r: {"features": r}, record),
        st.builds(lambda rs: {"features": rs}, st.lists(record, max_size=3)),
        st.dictionaries(st.text(max_size=8), value, max_size=3),
        value,
    )
    path = st.sampled_from(["/predict", "/predict/batch", "/v2/predict"])
    seen = {"count": 0}

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
    @given(path=path, payload=body)
    def check(path: str, payload: Any) -> None:
        seen["count"] += 1
        response = http.post(path, json=payload)
        assert response.status_code < 500, (path, payload, response.text)
        if response.status_code >= 400:
            detail = response.json()["detail"]
            assert detail, response.text
            if response.status_code == 422:
                assert all(problem["field"] and problem["message"] for problem in detail)

    check()
    assert seen["count"] >= 1000


def test_schemathesis_finds_no_server_errors(gateway: LocalProcess, http: httpx.Client) -> None:
    """Cases generated from the gateway's own OpenAPI schema, valid and invalid alike: at least
    1,000 of them, and not one answered 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.core.result import Ok

    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    checked = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        strategy = operation.as_strategy()

        # Operations without a body or parameters run out of distinct cases early.
        @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case: Any) -> None:
            nonlocal checked
            checked += 1
            response = case.call(base_url=gateway.url)
            assert response.status_code < 500, (case.path, case.body, response.text)

        check()
    print(f"\nschemathesis: {checked} cases, none answered 5xx")
    assert checked >= 1000


def test_crimes_sample_is_a_ready_request(http: httpx.Client) -> None:
    import subprocess
    import sys
    from pathlib import Path

    crimes = str(Path(sys.executable).parent / "crimes")
    sampled = subprocess.run(
        [crimes, "sample", "--seed", "7"], capture_output=True, text=True, check=True
    )
    assert sampled.stderr.startswith("true fbi_code: ")
    truth = sampled.stderr.split(": ", 1)[1].strip()
    response = http.post(
        "/predict", content=sampled.stdout, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json()["dtc_fbi_code_output"] == truth
