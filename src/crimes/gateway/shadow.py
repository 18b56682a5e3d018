"""Shadow scoring: a sampled share of the records the gateway has answered go, afterwards, to
each model's challenger deployment (the same model server following the alias `challenger`),
and the challenger's FBI codes are compared with the champion's answers.

Never on the answer's path: `offer` only appends to a bounded queue per model (no await, no
I/O); a worker per model lingers a little to gather records, transforms them with the
challenger's own transformation version (a challenger may come from another ETL run) and calls
it with a deadline of its own. A full queue, a challenger that is down, not ready, slow or
failing costs shadow records (dropped and counted by reason), never a request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crimes.feedback.keys import RecordKeys
from crimes.feedback.served import CHALLENGER, Served
from crimes.feedback.writer import PredictionLog
from crimes.gateway.calls import ModelCallError, ModelClient
from crimes.gateway.metrics import GatewayMetrics
from crimes.ops.logs import get_logger
from crimes.protocol import inference

log = get_logger(__name__)


class Records:
    """What the shadow needs of answered records: their validated values (one record as a dict,
    a batch as columns), without the champion's matrices."""

    def __init__(
        self,
        row: dict[str, Any] | None,
        columns: Mapping[str, Sequence[Any]] | None,
        count: int,
        keys: RecordKeys | None = None,
    ) -> None:
        self.row = row
        self.columns = columns
        self.count = count
        self.keys = keys


def merged(parts: Sequence[Records]) -> Records:
    """Several answered requests' records as one batch, in order."""
    if len(parts) == 1:
        return parts[0]
    names = list(parts[0].row if parts[0].row is not None else parts[0].columns or {})
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for part in parts:
        for name, values in columns.items():
            if part.row is not None:
                values.append(part.row[name])
            else:
                assert part.columns is not None
                values.extend(part.columns[name])
    return Records(None, columns, sum(part.count for part in parts))


@dataclass(frozen=True)
class Answered:
    records: Records
    labels: list[str]  # the champion's FBI codes, one per record
    champion_version: str
    request_id: str


@dataclass
class Agreement:
    """Running counts for one (champion version, challenger version) pair of a model."""

    records: int = 0
    agreed: int = 0

    @property
    def rate(self) -> float | None:
        return self.agreed / self.records if self.records else None


class Shadow:
    def __init__(
        self,
        challengers: Mapping[str, ModelClient],
        transform: Callable[[ModelClient, Records], Awaitable[tuple[str, np.ndarray]]],
        metrics: GatewayMetrics,
        share: float,
        capacity_records: int,
        linger_seconds: float = 0.02,
        max_call_records: int = 500,
        sample: Callable[[], float] = random.random,
    ) -> None:
        self.challengers = dict(challengers)
        # (challenger, records) -> awaitable (transformation version, matrix); the gateway's
        # transformation store, so that a challenger's version is fetched and verified once.
        self.transform = transform
        self.metrics = metrics
        self.share = share
        self.capacity = capacity_records
        self.linger = linger_seconds
        self.max_call_records = max_call_records
        self.sample = sample
        self.queues: dict[str, collections.deque[Answered]] = {
            kind: collections.deque() for kind in self.challengers
        }
        self.queued: dict[str, int] = dict.fromkeys(self.challengers, 0)
        self.agreement: dict[str, dict[tuple[str, str], Agreement]] = {
            kind: {} for kind in self.challengers
        }
        # (An Event binds to the running loop only when first waited on.)
        self._wake = {kind: asyncio.Event() for kind in self.challengers}
        self._workers: list[asyncio.Task[None]] = []
        self.log: PredictionLog | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.challengers) and self.share > 0

    async def start(self) -> None:
        for kind in self.challengers:
            self._workers.append(asyncio.create_task(self._work(kind), name=f"shadow-{kind}"))

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        for challenger in self.challengers.values():
            await challenger.close()

    def offer(
        self,
        records: Records,
        answers: Mapping[str, tuple[list[str] | None, str | None]],
        request_id: str = "",
    ) -> None:
        """Records the gateway has answered, with each champion's (labels, version): sampled,
        then queued for each model whose champion answered. Never blocks, never raises."""
        if not self.enabled or self.sample() >= self.share:
            return
        for kind, (labels, version) in answers.items():
            if kind not in self.queues or labels is None or version is None:
                continue
            if self.queued[kind] + records.count > self.capacity:
                self._drop(kind, "queue_full", records.count)
                continue
            self.queues[kind].append(Answered(records, labels, version, request_id))
            self.queued[kind] += records.count
            self.metrics.labelled(self.metrics.shadow_sent, kind).inc(records.count)
            self._wake[kind].set()

    def _drop(self, kind: str, reason: str, count: int) -> None:
        self.metrics.labelled(self.metrics.shadow_dropped, kind, reason).inc(count)

    async def _work(self, kind: str) -> None:
        wake = self._wake[kind]
        while True:
            await wake.wait()
            wake.clear()
            # Linger: the answers that made these records leave first, and records arriving
            # meanwhile share one call.
            await asyncio.sleep(self.linger)
            while self.queues[kind]:
                batch = self._take(kind)
                try:
                    await self._score(kind, batch)
                except Exception as error:  # the shadow must never stop working
                    log.warning("gateway.shadow_failed", model=kind, error=repr(error))
                    self._drop(kind, "error", sum(a.records.count for a in batch))

    def _take(self, kind: str) -> list[Answered]:
        queue, rows = self.queues[kind], 0
        batch: list[Answered] = []
        while queue and (not batch or rows + queue[0].records.count <= self.max_call_records):
            answered = queue.popleft()
            batch.append(answered)
            rows += answered.records.count
        self.queued[kind] -= rows
        return batch

    async def _score(self, kind: str, batch: list[Answered]) -> None:
        challenger = self.challengers[kind]
        count = sum(answered.records.count for answered in batch)
        # Its readiness is the gateway's refresh loop's to keep (every refresh_seconds, the
        # challengers with the champions): no metadata call per shadow batch here.
        if not challenger.state.ready:
            self._drop(kind, "challenger_not_ready", count)
            return
        started = time.perf_counter()
        try:
            async with asyncio.timeout(challenger.deadline_seconds):
                # One transformation and one call for the whole batch.
                version, matrix = await self.transform(
                    challenger, merged([a.records for a in batch])
                )
                output = await challenger.infer(
                    matrix,
                    version,
                    False,
                    [a.request_id for a in batch if a.request_id],
                    self.log is not None,
                )
        except TimeoutError:
            self._drop(kind, "challenger_timeout", count)
            return
        except ModelCallError as error:
            self._drop(kind, f"challenger_{error.status}", count)
            return
        self.metrics.labelled(self.metrics.shadow_latency, kind).observe(
            time.perf_counter() - started
        )
        self._compare(kind, batch, output.labels, output.model_version)
        self._log(kind, batch, output)

    def _log(self, kind: str, batch: list[Answered], output: inference.InferOutput) -> None:
        """The challenger's answers to the prediction log, each under its request's id."""
        if self.log is None:
            return
        served_at, offset = time.time(), 0
        for answered in batch:
            rows = slice(offset, offset + answered.records.count)
            offset += answered.records.count
            self.log.append(
                Served(
                    request_id=answered.request_id,
                    served_at=served_at,
                    kind=kind,
                    model_name=self.challengers[kind].model_name,
                    role=CHALLENGER,
                    model_version=output.model_version,
                    transformation_version=output.transformation_version,
                    codes=output.labels[rows],
                    confidence=None if output.confidence is None else output.confidence[rows],
                    keys=answered.records.keys,
                    indexed=None if output.indexed is None else output.indexed.part(rows),
                )
            )

    def _compare(
        self, kind: str, batch: list[Answered], challenged: list[str], challenger_version: str
    ) -> None:
        offset = 0
        for answered in batch:
            theirs = challenged[offset : offset + answered.records.count]
            offset += answered.records.count
            pair = (answered.champion_version, challenger_version)
            counts = self.agreement[kind].setdefault(pair, Agreement())
            agreed = sum(1 for a, b in zip(answered.labels, theirs, strict=True) if a == b)
            counts.records += len(theirs)
            counts.agreed += agreed
            labels = (kind, *pair)
            self.metrics.labelled(self.metrics.shadow_records, *labels).inc(len(theirs))
            self.metrics.labelled(self.metrics.shadow_agreements, *labels).inc(agreed)
            for champion_code, challenger_code in zip(answered.labels, theirs, strict=True):
                if champion_code != challenger_code:
                    self.metrics.labelled(
                        self.metrics.shadow_disagreements, *labels, champion_code, challenger_code
                    ).inc()

    def describe(self, kind: str) -> dict[str, Any] | None:
        """The challenger of a model as `/models` shows it, or None when there is none."""
        challenger = self.challengers.get(kind)
        if challenger is None:
            return None
        state = challenger.state
        pairs = self.agreement[kind]
        current = next(
            (
                counts
                for (_, challenger_version), counts in reversed(pairs.items())
                if challenger_version == state.model_version
            ),
            None,
        )
        return {
            "address": challenger.address,
            "share": self.share,
            **state.as_dict(),
            "shadow_records": current.records if current else 0,
            "agreement": current.rate if current else None,
            "queued_records": self.queued[kind],
            "by_versions": [
                {
                    "champion_version": champion,
                    "challenger_version": challenger_version,
                    "records": counts.records,
                    "agreement": counts.rate,
                }
                for (champion, challenger_version), counts in pairs.items()
            ],
        }
