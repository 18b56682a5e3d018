"""The gateway's core, transport-free: transform once per transformation version, call both
model services concurrently, merge per model, never wait past the deadline."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from crimes.gateway.backends import ModelCallError, ModelService
from crimes.gateway.cache import PredictionCache, cache_key
from crimes.gateway.coalesce import Coalescer
from crimes.gateway.metrics import GatewayMetrics
from crimes.gateway.transformation_store import Transformations, TransformationUnavailable
from crimes.ops.logs import get_logger
from crimes.transformation.lookup import FastTransformer

log = get_logger(__name__)


@dataclass
class ModelResult:
    status: str  # ok | timeout | unavailable | error
    labels: list[str] | None = None
    probabilities: np.ndarray | None = None
    classes: tuple[str, ...] | None = None
    reason: str | None = None
    model_version: str | None = None
    transformation_version: str | None = None
    latency_ms: float | None = None


@dataclass
class BatchResult:
    models: dict[str, ModelResult]
    unknown: list[list[str]] = field(default_factory=list)
    cached: bool = False

    @property
    def failures(self) -> dict[str, str]:
        return {
            kind: f"{result.status}: {result.reason}"
            for kind, result in self.models.items()
            if result.status != "ok"
        }


class Predictor:
    def __init__(
        self,
        services: dict[str, ModelService],
        transformations: Transformations,
        metrics: GatewayMetrics,
        cache: PredictionCache,
    ) -> None:
        self.services = services
        self.transformations = transformations
        self.metrics = metrics
        self.cache = cache
        self.coalescers = {kind: Coalescer(service) for kind, service in services.items()}

    async def refresh(self) -> None:
        await asyncio.gather(*(s.refresh() for s in self.services.values()))
        # Warm the transformations the services now report, off the request path.
        for service in self.services.values():
            state = service.state
            if state.transformation_version and not self.transformations.cached(
                state.transformation_version
            ):
                try:
                    await self.transformations.get(
                        state.transformation_version, state.transformation_uri, service.model_name
                    )
                except TransformationUnavailable as error:
                    log.warning("gateway.transformation_unavailable", error=str(error))

    async def predict_one(self, row: dict[str, Any], probabilities: bool = False) -> BatchResult:
        key = None
        if self.cache.enabled and not probabilities:
            versions = {k: s.state.model_version for k, s in self.services.items()}
            if all(versions.values()):
                key = cache_key(row, versions)
                hit = await self.cache.get(key)
                if hit is not None:
                    self.metrics.labelled(self.metrics.cache, "hit").inc()
                    return BatchResult(
                        models={k: ModelResult(**v) for k, v in hit["models"].items()},
                        unknown=hit["unknown"],
                        cached=True,
                    )
                self.metrics.labelled(self.metrics.cache, "miss").inc()
        else:
            self.metrics.labelled(self.metrics.cache, "off").inc()
        result = await self.predict([row], probabilities)
        if key is not None and not result.failures:
            await self.cache.put(
                key,
                {
                    "models": {
                        k: {
                            "status": r.status,
                            "labels": r.labels,
                            "model_version": r.model_version,
                            "transformation_version": r.transformation_version,
                        }
                        for k, r in result.models.items()
                    },
                    "unknown": result.unknown,
                },
            )
        return result

    async def predict(self, rows: list[dict[str, Any]], probabilities: bool = False) -> BatchResult:
        self.metrics.rows.inc(len(rows))
        matrices: dict[str, tuple[np.ndarray, list[list[str]]]] = {}
        # Each row's unknown categories: the first transformation's lists, merged with those
        # of another version only when the two services use different ones.
        unknown: list[list[str]] = []
        merged: set[str] = set()

        async def features_for(service: ModelService) -> tuple[str, np.ndarray]:
            state = service.state
            if not state.transformation_version:
                state = await service.refresh()
            version = state.transformation_version
            if not version:
                raise ModelCallError(None, state.error or "model service not ready")
            if version not in matrices:
                try:
                    fast: FastTransformer = await self.transformations.get(
                        version, state.transformation_uri, service.model_name
                    )
                except TransformationUnavailable as error:
                    raise ModelCallError(None, str(error)) from error
                # Once per distinct version: both models normally share one (and the other
                # call may have transformed while this one waited for the transformation).
                if version not in matrices:
                    matrices[version] = fast.transform(rows)
            matrix, row_unknown = matrices[version]
            if version not in merged:  # each version's unknowns once
                merged.add(version)
                if not unknown:
                    unknown[:] = [sorted(set(names)) if names else names for names in row_unknown]
                else:
                    for i, names in enumerate(row_unknown):
                        if names:
                            unknown[i] = sorted(set(unknown[i]) | set(names))
            return version, matrix

        async def call(kind: str, service: ModelService) -> ModelResult:
            started = time.perf_counter()
            try:
                for attempt in range(2):
                    version, matrix = await features_for(service)
                    try:
                        if len(matrix) == 1:
                            # A single record may share its call with concurrent ones.
                            output = await self.coalescers[kind].infer(
                                matrix, version, probabilities
                            )
                        else:
                            output = await service.infer(matrix, version, probabilities)
                        break
                    except ModelCallError as error:
                        # The service swapped to a model made with other features since our
                        # last look: learn its new version and transform again, once.
                        if error.code == grpc.StatusCode.FAILED_PRECONDITION and attempt == 0:
                            await service.refresh()
                            continue
                        raise
            except ModelCallError as error:
                if error.status == "unavailable":
                    asyncio.get_running_loop().create_task(service.refresh())
                self.metrics.labelled(
                    self.metrics.model_calls, kind, service.state.model_version or "", error.status
                ).inc()
                return ModelResult(
                    status=error.status,
                    reason=error.message,
                    model_version=service.state.model_version,
                    latency_ms=(time.perf_counter() - started) * 1000,
                )
            elapsed = time.perf_counter() - started
            self.metrics.labelled(self.metrics.model_latency, kind).observe(elapsed)
            self.metrics.labelled(self.metrics.model_calls, kind, output.model_version, "ok").inc()
            return ModelResult(
                status="ok",
                labels=output.labels,
                probabilities=output.probabilities,
                classes=output.classes,
                model_version=output.model_version,
                transformation_version=output.transformation_version,
                latency_ms=elapsed * 1000,
            )

        async def bounded(kind: str, service: ModelService) -> ModelResult:
            try:
                async with asyncio.timeout(service.deadline_seconds):
                    return await call(kind, service)
            except TimeoutError:
                self.metrics.labelled(
                    self.metrics.model_calls, kind, service.state.model_version or "", "timeout"
                ).inc()
                return ModelResult(
                    status="timeout",
                    reason=f"no answer within {service.deadline_seconds} s",
                    model_version=service.state.model_version,
                    latency_ms=service.deadline_seconds * 1000,
                )

        kinds = list(self.services)
        results = await asyncio.gather(*(bounded(k, self.services[k]) for k in kinds))
        if not unknown:  # no transformation ran (both services failed before)
            unknown = [[] for _ in rows]
        return BatchResult(models=dict(zip(kinds, results, strict=True)), unknown=unknown)
