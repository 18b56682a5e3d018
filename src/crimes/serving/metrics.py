"""Prometheus metrics of a model service, served over HTTP on their own port."""

from __future__ import annotations

import collections
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from crimes.serving.model import LoadedModel

# Requests take from ~0.1 ms (one row) to tens of ms (the largest batches).
LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Metrics:
    """The service's metrics, in a registry of its own (several servers may share a process)."""

    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        self.model = model
        self.registry = registry or CollectorRegistry()
        labels = ["method", "model", "version", "status"]
        self.requests = Counter(
            "crimes_model_requests",
            "gRPC requests by method, model, served version and status code.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "crimes_model_request_seconds",
            "Time to answer a gRPC request, by method, model, served version and status code.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._add_model_state()
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._loaded_labels: tuple[str, ...] | None = None
        self.ready.labels(model).set(0)
        for outcome in ("loaded", "fallback", "failed"):
            self.reloads.labels(model, outcome)

    def _add_model_state(self) -> None:
        """What is served, since when, and how its loads went."""
        self.loaded = Gauge(
            "crimes_model_loaded",
            "1 for the model version being served (labels say which and from where).",
            ["model", "version", "source", "transformation_version", "run_id"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "crimes_model_ready",
            "1 when a model is loaded and served.",
            ["model"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "crimes_model_reloads",
            "Model loads by outcome: loaded (from MLflow), fallback (served a fallback copy), "
            "failed (the version did not load or failed its checks; the old one keeps serving).",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.registry_reachable = Gauge(
            "crimes_model_registry_reachable",
            "1 when the last alias check reached MLflow.",
            ["model"],
            registry=self.registry,
        )
        self.unknown_categories = Counter(
            "crimes_model_unknown_categories",
            "Raw records served with a category no training row had, by feature.",
            ["model", "feature"],
            registry=self.registry,
        )

    def observe(self, method: str, version: str, status: str, seconds: float) -> None:
        key = (method, version, status)
        children = self._children.get(key)
        if children is None:
            labels = (method, self.model, version or "none", status)
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def unknown(self, per_row: list[list[str]]) -> None:
        """Count each row's unknown categories: one increment per feature, not per row."""
        counts = collections.Counter(feature for names in per_row for feature in names)
        for feature, count in counts.items():
            self.unknown_categories.labels(self.model, feature).inc(count)

    def serving(self, model: LoadedModel) -> None:
        if self._loaded_labels is not None:
            self.loaded.remove(*self._loaded_labels)
        self._loaded_labels = (
            self.model,
            model.version,
            str(model.source),
            model.transformation_version,
            model.run_id,
        )
        self.loaded.labels(*self._loaded_labels).set(1)
        self.ready.labels(self.model).set(1)

    def unloaded(self) -> None:
        if self._loaded_labels is not None:
            self.loaded.remove(*self._loaded_labels)
            self._loaded_labels = None
        self.ready.labels(self.model).set(0)

    def reload(self, outcome: str) -> None:
        self.reloads.labels(self.model, outcome).inc()

    def reachable(self, up: bool) -> None:
        self.registry_reachable.labels(self.model).set(1 if up else 0)

    def serve_http(self, host: str, port: int) -> tuple[Any, int]:
        """Start the /metrics endpoint; returns the HTTP server and the port it listens on."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server, int(server.server_port)
