"""The gateway's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._add_requests()
        self._add_model_calls()
        self._add_shadow()

    def _add_requests(self) -> None:
        self.requests = Counter(
            "crimes_gateway_requests_total",
            "HTTP requests by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "crimes_gateway_request_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.shed = Counter(
            "crimes_gateway_shed_total",
            "Prediction requests refused with 503 (Retry-After) because the gateway had its "
            "maximum in flight.",
            registry=self.registry,
        )
        self.rows = Counter(
            "crimes_gateway_rows_total", "Records predicted.", registry=self.registry
        )

    def _add_model_calls(self) -> None:
        self.model_calls = Counter(
            "crimes_gateway_model_calls_total",
            "Calls to the model services by model, served version and outcome.",
            ["model", "version", "outcome"],
            registry=self.registry,
        )
        self.model_latency = Histogram(
            "crimes_gateway_model_call_seconds",
            "Latency of the calls to the model services.",
            ["model"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self.cache = Counter(
            "crimes_gateway_cache_total",
            "Prediction cache lookups by outcome (hit, miss, off).",
            ["outcome"],
            registry=self.registry,
        )
        self.unknown_categories = Counter(
            "crimes_gateway_unknown_categories_total",
            "Records served with a category no training row had, by feature (encoded as the "
            "transformation's unknown category: a sign of new codes or of drift).",
            ["feature"],
            registry=self.registry,
        )

    def _add_shadow(self) -> None:
        """Shadow scoring of the challengers (gateway/shadow.py)."""
        self.shadow_sent = Counter(
            "crimes_gateway_shadow_sent_total",
            "Answered records sampled and queued for a model's challenger.",
            ["model"],
            registry=self.registry,
        )
        self.shadow_dropped = Counter(
            "crimes_gateway_shadow_dropped_total",
            "Shadow records not scored, by reason (queue_full, challenger_not_ready, "
            "challenger_timeout, challenger_unavailable, challenger_error, error).",
            ["model", "reason"],
            registry=self.registry,
        )
        versions = ["model", "champion_version", "challenger_version"]
        self.shadow_records = Counter(
            "crimes_gateway_shadow_records_total",
            "Records scored by the challenger, by model and both versions.",
            versions,
            registry=self.registry,
        )
        self.shadow_agreements = Counter(
            "crimes_gateway_shadow_agreements_total",
            "Records on which the challenger gave the champion's FBI code.",
            versions,
            registry=self.registry,
        )
        self.shadow_disagreements = Counter(
            "crimes_gateway_shadow_disagreements_total",
            "Records on which they differ, by the champion's and the challenger's FBI codes.",
            [*versions, "champion_code", "challenger_code"],
            registry=self.registry,
        )
        self.shadow_latency = Histogram(
            "crimes_gateway_shadow_call_seconds",
            "Time of a shadow batch: the challenger's transformation and its call.",
            ["model"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )

    def labelled(self, metric: MetricWrapperBase, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once: `labels()` checks and locks on every call,
        and each request updates several metrics."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child
