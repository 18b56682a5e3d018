"""The gateway's core, transport-free (neither gRPC nor HTTP): transform the records once per
transformation version, ask each model service for its answer within the deadline, merge the
answers per model into a typed result."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from crimes.feedback.keys import RecordKeys
from crimes.feedback.served import CHAMPION, Served
from crimes.feedback.writer import PredictionLog
from crimes.gateway.cache import PredictionCache, cache_key
from crimes.gateway.calls import ModelCallError, ModelClient
from crimes.gateway.coalesce import Coalescer
from crimes.gateway.drift import DriftMonitor
from crimes.gateway.metrics import GatewayMetrics
from crimes.gateway.shadow import Records, Shadow
from crimes.gateway.transformation_store import TransformationStore, TransformationUnavailable
from crimes.ops import requests, tracing
from crimes.ops.logs import get_logger
from crimes.protocol import inference
from crimes.protocol.outcomes import Outcome
from crimes.protocol.tensors import DATATYPES
from crimes.transformation.lookup import LookupTransformer

log = get_logger(__name__)


@dataclass
class ModelResult:
    """One model's answer for the records of a prediction, or why it has none."""

    outcome: Outcome  # ok, timeout, unavailable or error (what the answers say per model)
    labels: list[str] | None = None
    probabilities: np.ndarray | None = None
    classes: tuple[str, ...] | None = None
    reason: str | None = None
    model_version: str | None = None
    transformation_version: str | None = None
    latency_ms: float | None = None
    confidence: npt.NDArray[np.float32] | None = None  # each record's top probability
    indexed: inference.IndexedLabels | None = None  # the labels as the service sent them

    def to_dict(self) -> dict[str, Any]:
        """What the cache keeps of a successful answer (never probabilities or timings)."""
        return {
            "status": str(self.outcome),
            "labels": self.labels,
            "model_version": self.model_version,
            "transformation_version": self.transformation_version,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ModelResult:
        return cls(
            outcome=Outcome(str(value["status"])),
            labels=None if value.get("labels") is None else [str(c) for c in value["labels"]],
            model_version=value.get("model_version"),
            transformation_version=value.get("transformation_version"),
        )


@dataclass
class BatchResult:
    """Both models' answers for the records of one prediction, in the records' order."""

    models: dict[str, ModelResult]
    unknown: list[list[str]] = field(default_factory=list)
    cached: bool = False

    @property
    def failures(self) -> dict[str, str]:
        return {
            kind: f"{result.outcome}: {result.reason}"
            for kind, result in self.models.items()
            if result.outcome is not Outcome.OK
        }

    @property
    def answered(self) -> bool:
        """Whether any model answered (else the prediction failed as a whole)."""
        return any(result.outcome is Outcome.OK for result in self.models.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": {kind: result.to_dict() for kind, result in self.models.items()},
            "unknown": self.unknown,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> BatchResult:
        """A cached result: marked as such."""
        return cls(
            models={kind: ModelResult.from_dict(r) for kind, r in value["models"].items()},
            unknown=[[str(n) for n in names] for names in value["unknown"]],
            cached=True,
        )


def _cached_result(
    entry: dict[str, Any] | None, key: str, kinds: Collection[str]
) -> BatchResult | None:
    """A cache entry as a result (one answer per model of `kinds`); an entry that is not one
    is a miss (and logged), never an error of the request."""
    if entry is None:
        return None
    try:
        result = BatchResult.from_dict(entry)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        log.warning("gateway.cache_entry_invalid", key=key, error=repr(error))
        return None
    single = all(
        m.labels is not None and len(m.labels) == 1
        for m in result.models.values()
        if m.outcome is Outcome.OK
    )
    full = set(result.models) == set(kinds) and len(result.unknown) == 1
    if not result.answered or not single or not full:
        log.warning("gateway.cache_entry_invalid", key=key, error="not a full answer")
        return None
    return result


class TransformedRecords:
    """The records of one prediction (validated: one record as a dict, a batch as columns),
    transformed at most once per transformation version (both models normally share one),
    and each record's unknown categories."""

    def __init__(
        self,
        columns: Mapping[str, Sequence[Any]] | None,
        count: int,
        transformations: TransformationStore,
        row: dict[str, Any] | None = None,
    ) -> None:
        self.columns = columns
        self.row = row
        self.count = count
        self.transformations = transformations
        # Per transformation version and datatype (a model computing on FP32 gets float32:
        # made once, shared by the models that need it).
        self._matrices: dict[tuple[str, str], np.ndarray] = {}
        self._unknown: dict[str, list[list[str]]] = {}

    @classmethod
    def one(cls, row: dict[str, Any], transformations: TransformationStore) -> TransformedRecords:
        return cls(None, 1, transformations, row=row)

    def _transform(
        self, transformer: LookupTransformer, datatype: str
    ) -> tuple[np.ndarray, list[list[str]]]:
        dtype = DATATYPES[datatype].dtype
        assert dtype is not None, "a matrix datatype (FP64 or FP32)"
        if self.row is not None:
            matrix, unknown = transformer.transform([self.row])
            return matrix.astype(dtype, copy=False), unknown
        assert self.columns is not None
        return transformer.transform_columns(self.columns, self.count, dtype)

    async def for_service(self, service: ModelClient) -> tuple[str, np.ndarray]:
        """The transformation version the service's model needs, and the records made with it."""
        state = service.state
        if not state.transformation_version:
            state = await service.refresh()
        version = state.transformation_version
        if not version:
            raise ModelCallError(Outcome.UNAVAILABLE, state.error or "model service not ready")
        made = (version, state.input_datatype)
        if made not in self._matrices:
            try:
                transformer = await self.transformations.get(
                    version, service.model_name, state.model_version or ""
                )
            except TransformationUnavailable as error:
                raise ModelCallError(Outcome.UNAVAILABLE, str(error)) from error
            # The other model's call may have transformed while this one waited.
            if made not in self._matrices:
                with tracing.span("transform", records=self.count, transformation=version):
                    self._matrices[made], self._unknown[version] = self._transform(
                        transformer, state.input_datatype
                    )
        return version, self._matrices[made]

    def unknown(self) -> list[list[str]]:
        """Each record's unknown categories, under every transformation version used."""
        per_version = list(self._unknown.values())
        if not per_version:  # no transformation ran (both services failed before)
            return [[] for _ in range(self.count)]
        merged = [sorted(set(names)) if names else names for names in per_version[0]]
        for other in per_version[1:]:
            for i, names in enumerate(other):
                if names:
                    merged[i] = sorted(set(merged[i]) | set(names))
        return merged


class Predictor:
    def __init__(
        self,
        services: Mapping[str, ModelClient],
        transformations: TransformationStore,
        metrics: GatewayMetrics,
        cache: PredictionCache,
    ) -> None:
        self.services = services
        self.transformations = transformations
        self.metrics = metrics
        self.cache = cache
        self.coalescers = {kind: Coalescer(service) for kind, service in services.items()}
        self.shadow: Shadow | None = None
        self.drift: DriftMonitor | None = None
        self.log: PredictionLog | None = None

    async def shadow_transform(
        self, challenger: ModelClient, records: Records
    ) -> tuple[str, np.ndarray]:
        """Records made with the transformation version the challenger's model needs."""
        fresh = TransformedRecords(
            records.columns, records.count, self.transformations, row=records.row
        )
        return await fresh.for_service(challenger)

    async def refresh(self) -> None:
        challengers = list(self.shadow.challengers.values()) if self.shadow else []
        await asyncio.gather(*(s.refresh() for s in [*self.services.values(), *challengers]))
        # Warm the transformations the services now report, off the request path and off
        # this loop: a hung MLflow never holds the next metadata refresh back.
        for service in [*self.services.values(), *challengers]:
            state = service.state
            version = state.transformation_version
            if version and not self.transformations.cached(version):
                self.transformations.warm(version, service.model_name, state.model_version or "")
        if self.drift is not None:
            self.drift.refresh()

    async def predict_one(
        self,
        row: dict[str, Any],
        probabilities: bool = False,
        record_key: RecordKeys | None = None,
    ) -> BatchResult:
        """One record, through the cache when there is one (never with probabilities)."""
        result = await self._predict_one(row, probabilities, record_key)
        self._log_one(result, record_key)
        return result

    async def _predict_one(
        self, row: dict[str, Any], probabilities: bool, record_key: RecordKeys | None
    ) -> BatchResult:
        if self.drift is not None:
            self.drift.observe_row(row)
        key = self._cache_key(row) if self.cache.enabled and not probabilities else None
        if not self.cache.enabled or probabilities:
            self.metrics.labelled(self.metrics.cache, "off").inc()
        elif key is not None:
            cached = _cached_result(await self.cache.get(key), key, self.services.keys())
            self.metrics.labelled(self.metrics.cache, "hit" if cached else "miss").inc()
            if cached is not None:
                return cached
        records = TransformedRecords.one(row, self.transformations)
        result = await self._predict(records, probabilities, record_key)
        if key is not None and not result.failures:
            await self.cache.put(key, result.to_dict())
        return result

    def max_batch_records(self, configured: int) -> int:
        """The most records a batch may hold: the configured maximum, and never more than a
        model service advertises it takes in one call."""
        advertised = [s.state.max_batch_rows for s in self.services.values()]
        return min([configured, *(m for m in advertised if m)])

    def _cache_key(self, row: dict[str, Any]) -> str | None:
        """Keyed by what each model is served as too; none until every version is known."""
        served = {
            kind: (s.model_name, s.state.model_version or "", s.state.transformation_version or "")
            for kind, s in self.services.items()
        }
        return cache_key(row, served) if all(v[1] and v[2] for v in served.values()) else None

    async def predict(
        self,
        columns: Mapping[str, Sequence[Any]],
        count: int,
        probabilities: bool = False,
        keys: RecordKeys | None = None,
    ) -> BatchResult:
        """Validated records given column by column (a batch), with their keys if known."""
        if self.drift is not None:
            self.drift.observe_columns(columns, count)
        result = await self._predict(
            TransformedRecords(columns, count, self.transformations), probabilities, keys
        )
        self._log(result, keys)
        return result

    def _log(self, result: BatchResult, keys: RecordKeys | None) -> None:
        """Each model's answers to the prediction log (kept by reference: no I/O here)."""
        if self.log is None:
            return
        served_at, request_id = time.time(), requests.current.get()
        for kind, model in result.models.items():
            if model.outcome is Outcome.OK and model.labels is not None:
                self.log.append(
                    Served(
                        request_id=request_id,
                        served_at=served_at,
                        kind=kind,
                        model_name=self.services[kind].model_name,
                        role=CHAMPION,
                        model_version=model.model_version or "",
                        transformation_version=model.transformation_version or "",
                        codes=model.labels,
                        confidence=model.confidence,
                        keys=keys,
                        indexed=model.indexed,
                    )
                )

    def _log_one(self, result: BatchResult, key: RecordKeys | None) -> None:
        """`_log` for the answers to one record: a row per answer, no `Served` made."""
        if self.log is None:
            return
        answers = [
            (
                kind,
                self.services[kind].model_name,
                model.model_version or "",
                model.transformation_version or "",
                model.labels[0],
                math.nan if model.confidence is None else float(model.confidence[0]),
            )
            for kind, model in result.models.items()
            if model.outcome is Outcome.OK and model.labels
        ]
        record = (None, None) if key is None else (key.ids[0], key.case_numbers[0])
        self.log.append_record(requests.current.get(), time.time(), record, answers)

    async def _predict(
        self, records: TransformedRecords, probabilities: bool, keys: RecordKeys | None = None
    ) -> BatchResult:
        self.metrics.rows.inc(records.count)
        kinds = list(self.services)
        results = await asyncio.gather(
            *(self._answer_within_deadline(kind, records, probabilities) for kind in kinds)
        )
        unknown = records.unknown()
        self._count_unknown(unknown)
        answered = dict(zip(kinds, results, strict=True))
        if self.shadow is not None:
            # Queued only (no await): the challengers score the records after the answer.
            self.shadow.offer(
                Records(records.row, records.columns, records.count, keys),
                {kind: (r.labels, r.model_version) for kind, r in answered.items()},
                requests.current.get(),
            )
        return BatchResult(models=answered, unknown=unknown)

    def _count_unknown(self, unknown: list[list[str]]) -> None:
        counts = Counter(name for names in unknown if names for name in names)
        for feature, count in counts.items():
            self.metrics.labelled(self.metrics.unknown_categories, feature).inc(count)

    async def _answer_within_deadline(
        self, kind: str, records: TransformedRecords, probabilities: bool
    ) -> ModelResult:
        service = self.services[kind]
        try:
            async with asyncio.timeout(service.deadline_seconds):
                return await self._answer(kind, records, probabilities)
        except TimeoutError:
            self._count(kind, service.state.model_version, "timeout")
            return ModelResult(
                outcome=Outcome.TIMEOUT,
                reason=f"no answer within {service.deadline_seconds} s",
                model_version=service.state.model_version,
                latency_ms=service.deadline_seconds * 1000,
            )

    async def _answer(
        self, kind: str, records: TransformedRecords, probabilities: bool
    ) -> ModelResult:
        """One model's answer for the records, or the failure that stands for it."""
        service = self.services[kind]
        started = time.perf_counter()
        try:
            output = await self._infer(kind, records, probabilities)
        except ModelCallError as error:
            if error.outcome is Outcome.UNAVAILABLE:
                service.refresh_soon()
            self._count(kind, service.state.model_version, error.status)
            return ModelResult(
                outcome=error.status,
                reason=error.message,
                model_version=service.state.model_version,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        elapsed = time.perf_counter() - started
        self.metrics.labelled(self.metrics.model_latency, kind).observe(elapsed)
        self._count(kind, output.model_version, "ok")
        return ModelResult(
            outcome=Outcome.OK,
            labels=output.labels,
            probabilities=output.probabilities,
            classes=output.classes,
            model_version=output.model_version,
            transformation_version=output.transformation_version,
            latency_ms=elapsed * 1000,
            confidence=output.confidence,
            indexed=output.indexed,
        )

    async def _infer(
        self, kind: str, records: TransformedRecords, probabilities: bool
    ) -> inference.InferOutput:
        """Call one model service; if its model changed to another transformation since our
        last look, learn the new version and transform again, once."""
        service = self.services[kind]
        for attempt in range(2):
            version, matrix = await records.for_service(service)
            request_id = requests.current.get()
            # The log keeps each record's top probability (4 bytes a row on the wire).
            confidence = self.log is not None
            try:
                if len(matrix) == 1:
                    # A single record may share its call with concurrent ones.
                    return await self.coalescers[kind].infer(
                        matrix, version, probabilities, request_id, confidence
                    )
                return await service.infer(
                    matrix, version, probabilities, (request_id,), confidence
                )
            except ModelCallError as error:
                if error.outcome is Outcome.STALE and attempt == 0:
                    await service.refresh()
                    continue
                raise
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _count(self, kind: str, version: str | None, outcome: str) -> None:
        self.metrics.labelled(self.metrics.model_calls, kind, version or "", outcome).inc()
