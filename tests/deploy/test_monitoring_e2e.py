"""A real Prometheus (Debian's) scraping the gateway, both model services and both challenger
deployments, with the repository's recording and alert rules: the targets are up, the served
requests and their drift are scraped, the recording rules evaluate, a challenger waiting for a
version pages nobody, and a model service that stops raises its alert."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from crimes import contract
from crimes.gateway.schemas import EXAMPLE
from crimes.local import launch, prometheus
from crimes.local.launch import LocalProcess
from crimes.local.stack import free_port
from tests.support.system import serving_system

pytestmark = pytest.mark.e2e

T = TypeVar("T")


def eventually(check: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


@pytest.fixture(scope="module")
def system(
    trained: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LocalProcess]]:
    """Both model services, both challenger deployments (no challenger version: up, waiting),
    the gateway, and a Prometheus scraping them every second."""
    folder = tmp_path_factory.mktemp("monitored")
    deployments = ("dtc", "lda", "dtc-challenger", "lda-challenger")
    # A small drift window, so that the 50 answers below are judged.
    drift = {"CRIMES_GATEWAY_DRIFT_WINDOW_RECORDS": "100", "CRIMES_GATEWAY_DRIFT_MIN_RECORDS": "20"}
    challengers = ("dtc-challenger", "lda-challenger")  # no challenger version: live, not ready
    with serving_system(folder, deployments, gateway=drift, waiting=challengers) as started:
        targets = {
            prometheus.GATEWAY_JOB: [f"127.0.0.1:{started['gateway'].metrics_port}"],
            **{
                prometheus.model_job(deployment): [f"127.0.0.1:{started[deployment].metrics_port}"]
                for deployment in deployments
            },
        }
        config = prometheus.write_config(folder / "prometheus", targets, interval="1s")
        port = free_port()
        scraper = launch.start(
            LocalProcess,
            "prometheus",
            prometheus.argv(config, folder / "prometheus" / "data", port),
            port,
            folder,
            {},
        )
        try:
            eventually(lambda: prometheus.ready(scraper.url), "prometheus ready")
            yield {**started, "prometheus": scraper}
        finally:
            scraper.stop()


@pytest.fixture(scope="module")
def url(system: dict[str, LocalProcess]) -> str:
    return system["prometheus"].url


def test_every_part_is_scraped(url: str) -> None:
    def all_up() -> dict[str, str] | None:
        targets = prometheus.api(url, "targets")["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        return health if set(health.values()) == {"up"} and len(health) == 5 else None

    health = eventually(all_up, "all five targets up")
    assert set(health) == {
        "crimes-gateway",
        "crimes-model-dtc",
        "crimes-model-lda",
        "crimes-model-dtc-challenger",
        "crimes-model-lda-challenger",
    }


def test_served_requests_are_counted_and_the_recording_rules_evaluate(
    url: str, system: dict[str, LocalProcess]
) -> None:
    with httpx.Client(base_url=system["gateway"].url, timeout=10, trust_env=False) as http:
        answered = 0
        for _ in range(50):
            answered += http.post("/predict", json={"features": EXAMPLE}).status_code == 200
    assert answered == 50

    def counted() -> list[dict[str, Any]] | None:
        found = prometheus.query(
            url, 'sum(crimes_gateway_requests_total{route="/predict", status="200"})'
        )
        return found if found and found[0]["value"] >= 50 else None

    eventually(counted, "the gateway's 50 answers scraped")

    def served_by_both() -> list[dict[str, Any]] | None:
        found = prometheus.query(
            url, 'sum by (job) (crimes_model_requests_total{method="ModelInfer", status="OK"})'
        )
        return found if len(found) == 2 and min(s["value"] for s in found) >= 50 else None

    eventually(served_by_both, "both model services' calls scraped")
    ready = eventually(
        lambda: prometheus.query(url, "model:crimes_model_ready:sum") or None,
        "the recording rule model:crimes_model_ready:sum",
    )
    assert sorted(s["value"] for s in ready) == [1.0, 1.0]
    failures = eventually(
        lambda: prometheus.query(url, "model:crimes_gateway_model_call_failures:ratio1m") or None,
        "the recording rule of model call failures",
    )
    assert {s["labels"]["model"]: s["value"] for s in failures} == {"dtc": 0.0, "lda": 0.0}
    # The drift of the served records, per model and judged feature (the calendar's are not).
    drift = eventually(
        lambda: prometheus.query(url, "count by (model) (crimes_model_feature_psi)") or None,
        "the drift gauges",
    )
    judged = len(contract.FEATURES) - len(contract.CALENDAR_FEATURES)
    assert {s["labels"]["model"]: s["value"] for s in drift} == {"dtc": judged, "lda": judged}
    groups = {group["name"] for group in prometheus.api(url, "rules")["groups"]}
    assert groups == {"crimes-recording", "crimes-alerts"}


def test_a_model_service_that_stops_raises_its_alert(
    url: str, system: dict[str, LocalProcess]
) -> None:
    # Last in the module: it stops the lda service.
    system["lda"].stop()

    def alerting() -> list[dict[str, Any]] | None:
        alerts = prometheus.api(url, "alerts")["alerts"]
        found = [a for a in alerts if a["labels"]["alertname"] == "CrimesModelServiceDown"]
        return found or None

    (alert,) = eventually(alerting, "CrimesModelServiceDown pending")
    assert alert["labels"]["job"] == "crimes-model-lda"
    # `for: 1m`: pending first, a page only if it stays down.
    assert alert["state"] == "pending"
