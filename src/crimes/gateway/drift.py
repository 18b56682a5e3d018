"""Drift of the records the gateway serves, per model version, against the distribution that
version was trained on.

The refresh loop learns which version each model service serves; the version's reference
distribution (logged by its training, named by a content hash tagged on the version) is
fetched once in the background and checked against that hash. Every validated record the
gateway serves goes into the rolling window of each served version's reference (one window per
distinct reference: both models trained on one dataset share it). A new version starts a new
window. Reports are made on demand: `/drift`, `/models` and each Prometheus scrape.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from crimes import registry
from crimes.drift import reference as drift_reference
from crimes.drift.window import Window, WindowReport
from crimes.gateway.calls import ModelClient
from crimes.ops import requests
from crimes.ops.logs import get_logger
from crimes.registry import Tag, artifacts

log = get_logger(__name__)

# A reference that could not be fetched is tried again after this long.
RETRY_SECONDS = 30.0
# Distinct clients told apart in the windows; past it, every new one counts as one more
# client, the same one (a bound on memory, whatever the addresses a flood comes from).
MAX_SOURCES = 65_536


@dataclass
class Served:
    """What drift knows of the version a model service serves."""

    version: str
    status: str = "loading"  # loading | measuring | no_reference | unavailable
    reason: str = ""
    window: Window | None = None
    failed_at: float = 0.0


class DriftMonitor:
    def __init__(
        self,
        services: Mapping[str, ModelClient],
        tracking_uri: str,
        window_records: int,
        min_records: int,
    ) -> None:
        self.services = dict(services)
        self.tracking_uri = tracking_uri
        self.window_records = window_records
        self.min_records = min_records
        self.served: dict[str, Served] = {}
        self._windows: dict[str, Window] = {}  # by reference version
        self._active: tuple[Window, ...] = ()
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._sources: dict[str, int] = {}
        self.errors = 0
        self._started = False

    def started(self) -> bool:
        """Whether the references of the versions served at start have each been looked for
        (found, absent or failed). Until then their fetch (its first imports, compiled from
        source where no bytecode is kept, and the object store's first client) holds the
        interpreter for up to half a second here: a request then can miss its deadline. Once
        true, it stays true: a later version's fetch never makes the gateway unready."""
        if not self._started:
            known = [kind for kind, s in self.services.items() if s.state.model_version]
            self._started = bool(known) and all(
                kind in self.served and self.served[kind].status != "loading" for kind in known
            )
        return self._started

    # The answer path: no I/O, no await, and never an error that would fail a request.
    def source(self, client: str) -> int:
        """The small number a client's records carry in the windows."""
        found = self._sources.get(client)
        if found is None and len(self._sources) < MAX_SOURCES:
            found = self._sources[client] = len(self._sources)
        return MAX_SOURCES if found is None else found

    def observe_row(self, row: Mapping[str, Any]) -> None:
        try:
            source = self.source(requests.client.get())
            for window in self._active:
                window.add_row(row, source)
        except Exception as error:
            self._unobserved(error)

    def observe_columns(self, columns: Mapping[str, Sequence[Any]], count: int) -> None:
        try:
            source = self.source(requests.client.get())
            for window in self._active:
                window.add_columns(columns, count, source)
        except Exception as error:
            self._unobserved(error)

    def _unobserved(self, error: Exception) -> None:
        self.errors += 1
        if self.errors & (self.errors - 1) == 0:  # the 1st, 2nd, 4th, 8th...: never a flood
            log.error("drift.observe_failed", error=repr(error), errors=self.errors)

    # The refresh loop.
    def refresh(self) -> None:
        """Follow the versions the services report; fetch new versions' references."""
        for kind, service in self.services.items():
            version = service.state.model_version
            if not version:
                continue
            served = self.served.get(kind)
            if served is None or served.version != version:
                served = self.served[kind] = Served(version)
                self._activate()
            retry = served.status == "unavailable" and (
                time.monotonic() - served.failed_at > RETRY_SECONDS
            )
            if (served.status == "loading" or retry) and kind not in self._loading:
                task = asyncio.get_running_loop().create_task(self._load(kind, served))
                self._loading[kind] = task
                task.add_done_callback(functools.partial(self._loaded, kind))

    def _loaded(self, kind: str, task: asyncio.Task[None]) -> None:
        self._loading.pop(kind, None)

    async def _load(self, kind: str, served: Served) -> None:
        name = self.services[kind].model_name
        try:
            reference = await asyncio.to_thread(self._fetch, name, served.version)
        except Exception as error:
            served.status, served.reason, served.failed_at = (
                "unavailable",
                str(error),
                time.monotonic(),
            )
            log.warning("drift.reference_unavailable", model=kind, version=served.version,
                        error=str(error))  # fmt: skip
            return
        if reference is None:
            served.status = "no_reference"
            served.reason = f"version {served.version} was registered without a drift reference"
            log.info("drift.no_reference", model=kind, version=served.version)
            return
        window = self._windows.get(reference.version)
        if window is None:
            window = Window(reference, self.window_records, self.min_records)
        served.window, served.status, served.reason = window, "measuring", ""
        self._activate()
        log.info("drift.measuring", model=kind, version=served.version,
                 reference=reference.version, dataset=reference.dataset)  # fmt: skip

    def _fetch(self, name: str, version: str) -> drift_reference.Reference | None:
        tags = artifacts.version_tags(self.tracking_uri, name, version)
        expected = tags.get(Tag.DRIFT_REFERENCE)
        if not expected:
            return None
        data = artifacts.version_artifact(
            self.tracking_uri, name, version, registry.DRIFT_REFERENCE_ARTIFACT
        )
        return drift_reference.loads(data, expected_version=expected)

    def _activate(self) -> None:
        """The windows of the versions served now; a window no version uses is let go."""
        in_use = {s.window.reference.version: s.window for s in self.served.values() if s.window}
        self._windows = in_use
        self._active = tuple(in_use.values())

    # Reports.
    def report(self) -> dict[str, dict[str, Any]]:
        """Per model: the version served, the drift status and its window's report."""
        reports: dict[str, WindowReport] = {}
        described = {}
        for kind, served in self.served.items():
            window = served.window
            if window is not None and window.reference.version not in reports:
                reports[window.reference.version] = window.report()
            described[kind] = {
                "model": self.services[kind].model_name,
                "version": served.version,
                "status": served.status,
                "reason": served.reason,
                "window": reports[window.reference.version].as_dict() if window else None,
            }
        return described

    def worst(self, kind: str, count: int = 3) -> dict[str, Any] | None:
        """What `/models` shows of a model's drift: its window and its worst features."""
        served = self.served.get(kind)
        if served is None:
            return None
        found: dict[str, Any] = {"version": served.version, "status": served.status}
        if served.window is not None:
            report = served.window.report()
            found["records"] = report.records
            found["worst"] = [f.as_dict() for f in report.worst(count)]
        return found


class DriftCollector(Collector):
    """The windows' PSI and unknown shares as Prometheus gauges, computed at scrape time."""

    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["model", "version", "feature"]
        psi = GaugeMetricFamily(
            "crimes_model_feature_psi",
            "Population stability index of each feature over the gateway's window of served "
            "records, against the served version's training split (judged features only; "
            "above 0.2 is a shift worth retraining for).",
            labels=labels,
        )
        unknown = GaugeMetricFamily(
            "crimes_model_feature_unknown_share",
            "Share of the window's records with a category no training record had.",
            labels=labels,
        )
        records = GaugeMetricFamily(
            "crimes_model_drift_window_records",
            "Records in the drift window of each served model version.",
            labels=["model", "version"],
        )
        for kind, state in self.monitor.report().items():
            window = state["window"]
            if window is None:
                continue
            records.add_metric([kind, state["version"]], window["records"])
            for item in window["features"]:
                key = [kind, state["version"], item["feature"]]
                if item["judged"]:
                    psi.add_metric(key, item["psi"])
                unknown.add_metric(key, item["unknown_share"])
        yield from (psi, unknown, records)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
