"""The gateway's drift monitor with service doubles (the real one, against MLflow and model
services, runs in tests/drift/test_drift_e2e.py): it follows served versions, shares a window
per reference, exports gauges, and never fails a request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from crimes.drift import reference as drift_reference
from crimes.drift.reference import Reference
from crimes.gateway import drift
from crimes.gateway.calls import ServiceState
from crimes.gateway.drift import DriftCollector, DriftMonitor
from crimes.registry import artifacts
from tests.drift.test_drift import records, training_frame


class Service:
    def __init__(self, name: str, version: str) -> None:
        self.model_name = name
        self.state = ServiceState(ready=True, model_version=version)


def monitor(fetched: dict[tuple[str, str], Reference | Exception | None]) -> DriftMonitor:
    services = {"dtc": Service("dtc_model_prod", "3"), "lda": Service("lda_model_prod", "1")}
    watched = DriftMonitor(services, "http://mlflow", window_records=100, min_records=10)  # type: ignore[arg-type]

    def fetch(name: str, version: str) -> Reference | None:
        found = fetched[(name, version)]
        if isinstance(found, Exception):
            raise found
        return found

    watched._fetch = fetch  # type: ignore[method-assign]
    return watched


async def refreshed(watched: DriftMonitor) -> None:
    watched.refresh()
    await asyncio.gather(*list(watched._loading.values()))


def test_served_versions_share_one_window_per_reference_and_a_new_version_starts_afresh() -> None:
    one = drift_reference.of_features(training_frame(), "ds-1")
    other = drift_reference.of_features(training_frame(seed=5), "ds-2")
    fetched: dict[Any, Any] = {
        ("dtc_model_prod", "3"): one,
        ("lda_model_prod", "1"): one,
        ("dtc_model_prod", "4"): other,
    }
    watched = monitor(fetched)

    async def scenario() -> None:
        await refreshed(watched)
        assert {s.status for s in watched.served.values()} == {"measuring"}
        assert watched.served["dtc"].window is watched.served["lda"].window
        for row in records(training_frame(20, seed=1)):
            watched.observe_row(row)
        report = watched.report()
        assert report["dtc"]["window"]["records"] == report["lda"]["window"]["records"] == 20
        watched.services["dtc"].state.model_version = "4"  # a new champion
        await refreshed(watched)
        report = watched.report()
        assert report["dtc"]["version"] == "4"
        assert report["dtc"]["window"]["records"] == 0
        assert report["dtc"]["window"]["reference"] == other.version
        assert report["lda"]["window"]["records"] == 20

    asyncio.run(scenario())


def test_a_version_without_a_reference_or_an_unreachable_registry_is_said() -> None:
    fetched: dict[Any, Any] = {
        ("dtc_model_prod", "3"): None,
        ("lda_model_prod", "1"): ConnectionError("mlflow down"),
    }
    watched = monitor(fetched)

    async def scenario() -> None:
        await refreshed(watched)
        report = watched.report()
        assert report["dtc"]["status"] == "no_reference"
        assert report["lda"]["status"] == "unavailable"
        assert "mlflow down" in report["lda"]["reason"]
        # Tried again only after a while; then it measures.
        fetched[("lda_model_prod", "1")] = drift_reference.of_features(training_frame(), "ds")
        await refreshed(watched)
        assert watched.report()["lda"]["status"] == "unavailable"
        watched.served["lda"].failed_at -= drift.RETRY_SECONDS + 1
        await refreshed(watched)
        assert watched.report()["lda"]["status"] == "measuring"

    asyncio.run(scenario())


def test_the_gauges_and_a_broken_record_that_fails_no_request() -> None:
    fetched: dict[Any, Any] = {
        ("dtc_model_prod", "3"): drift_reference.of_features(training_frame(), "ds"),
        ("lda_model_prod", "1"): None,
    }
    watched = monitor(fetched)
    asyncio.run(refreshed(watched))
    for row in records(training_frame(52, seed=3)):
        watched.observe_row(row)
    watched.observe_row({"district": ["not", "hashable"]})  # never raises
    watched.observe_columns({"district": [["x"]]}, 1)
    assert watched.errors == 2
    registry = CollectorRegistry()
    registry.register(DriftCollector(watched))
    text = generate_latest(registry).decode()
    assert 'crimes_model_drift_window_records{model="dtc",version="3"} 52.0' in text
    assert 'crimes_model_feature_psi{feature="district",model="dtc",version="3"}' in text
    assert 'feature="mes"' not in text.split("crimes_model_feature_unknown_share")[0]
    assert 'model="lda"' not in text  # no reference: nothing exported


@pytest.fixture(autouse=True)
def _no_real_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifacts, "version_tags", _refuse)


def _refuse(*args: Any) -> Any:
    raise AssertionError("the doubles answer; MLflow is never called here")


def test_started_once_every_served_reference_was_looked_for_and_never_unstarted() -> None:
    """The gateway's readiness waits for it (`started`): found, absent or failed, each served
    version's first fetch is over; a later version's fetch never makes it false again."""
    gate = asyncio.Event()
    one = drift_reference.of_features(training_frame(), "ds-1")
    fetched: dict[Any, Any] = {
        ("dtc_model_prod", "3"): None,
        ("lda_model_prod", "1"): ConnectionError("mlflow down"),
        ("dtc_model_prod", "4"): one,
    }
    watched = monitor(fetched)
    fetch = watched._fetch

    def held(name: str, version: str) -> Reference | None:
        # The first fetches wait for the gate (in their thread).
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
        return fetch(name, version)

    watched._fetch = held  # type: ignore[method-assign]

    async def scenario() -> None:
        assert not watched.started()  # nothing served is known yet
        watched.refresh()
        await asyncio.sleep(0.05)
        assert not watched.started()
        gate.set()
        await asyncio.gather(*list(watched._loading.values()))
        assert watched.started()
        watched.services["dtc"].state.model_version = "4"  # a new champion, loading
        watched.refresh()
        assert watched.served["dtc"].status == "loading"
        assert watched.started()
        await asyncio.gather(*list(watched._loading.values()))

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


def test_no_version_served_is_not_started() -> None:
    watched = monitor({})
    for service in watched.services.values():
        service.state.model_version = None
    watched.refresh()
    assert not watched.started()
