"""Concurrent single-record calls merged into shared model calls: each record gets exactly its
own row, or the call's error; a caller that gives up leaves the queue."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from crimes.gateway.calls import ModelCallError
from crimes.gateway.coalesce import Coalescer
from crimes.ops import requests
from crimes.protocol import inference
from crimes.protocol.outcomes import Outcome


class FakeService:
    """Answers each row's first feature as its label, after a delay; fails when told to."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.calls: list[int] = []
        self.request_ids: list[list[str]] = []
        self.running_for: list[str] = []  # the request id bound where each call runs
        self.fail_next: ModelCallError | None = None

    async def infer(
        self,
        features: np.ndarray,
        version: str,
        probabilities: bool,
        request_ids: list[str] | tuple[str, ...] = (),
        confidence: bool = False,
    ) -> inference.InferOutput:
        self.calls.append(len(features))
        self.request_ids.append(list(request_ids))
        self.running_for.append(requests.current.get())
        failure, self.fail_next = self.fail_next, None
        await asyncio.sleep(self.delay)
        if failure is not None:
            raise failure
        return inference.InferOutput(
            model_version="3",
            transformation_version=version,
            labels=[f"{int(row[0])}" for row in features],
            probabilities=np.asarray(features[:, :2], dtype=np.float64) if probabilities else None,
            classes=("a", "b") if probabilities else None,
        )


def row(value: int) -> np.ndarray:
    return np.array([[value, value + 0.5, 0.0]], dtype=np.float64)


def coalescer(service: FakeService, **options: Any) -> Coalescer:
    return Coalescer(service, **options)  # type: ignore[arg-type]


def test_each_record_gets_its_own_row_from_shared_calls() -> None:
    async def scenario() -> tuple[list[inference.InferOutput], FakeService, int]:
        service = FakeService()
        merger = coalescer(service)

        async def request(i: int) -> inference.InferOutput:
            requests.current.set(f"req-{i}")  # as the gateway's middleware does, per request
            return await merger.infer(row(i), "tf-1", True, f"req-{i}")

        answers = await asyncio.gather(*(request(i) for i in range(50)))
        return answers, service, merger.in_flight

    answers, service, in_flight = asyncio.run(scenario())
    assert [a.labels for a in answers] == [[str(i)] for i in range(50)]
    for i, answer in enumerate(answers):
        assert answer.probabilities is not None
        assert answer.probabilities.tolist() == [[i, i + 0.5]]
        assert answer.classes == ("a", "b")
    # Two calls alone (nothing in flight yet), then the 48 waiting records in one call.
    assert service.calls == [1, 1, 48]
    # Each call names the gateway requests of its records, in their rows' order.
    assert service.request_ids == [["req-0"], ["req-1"], [f"req-{i}" for i in range(2, 50)]]
    # A shared call runs for its first record's request (its logs and span), not for the
    # request that happened to free the slot (req-0 or req-1).
    assert service.running_for == ["req-0", "req-1", "req-2"]
    assert in_flight == 0


def test_while_a_shared_call_is_in_flight_records_wait_for_the_next_one() -> None:
    async def scenario() -> FakeService:
        service = FakeService(delay=0.05)
        merger = coalescer(service)  # two calls in flight at most
        first = [asyncio.ensure_future(merger.infer(row(i), "tf-1", False)) for i in range(3)]
        await asyncio.sleep(0.07)  # 0 and 1 answered alone; 2 left in a shared call
        assert service.calls == [1, 1, 1]
        assert merger.in_flight == 1
        # A slot is free, but a shared call is in flight: these two wait for the next one.
        later = [asyncio.ensure_future(merger.infer(row(i), "tf-1", False)) for i in (3, 4)]
        answers = await asyncio.gather(*first, *later)
        assert [a.labels for a in answers] == [[str(i)] for i in range(5)]
        # Idle again: a record goes out alone.
        assert (await merger.infer(row(5), "tf-1", False)).labels == ["5"]
        assert merger.in_flight == 0
        assert not merger.shared_in_flight
        return service

    service = asyncio.run(scenario())
    assert service.calls == [1, 1, 1, 2, 1]


def test_at_most_max_rows_per_call_and_versions_never_mix() -> None:
    async def scenario() -> tuple[list[inference.InferOutput], FakeService]:
        service = FakeService()
        merger = coalescer(service, max_in_flight=1, max_rows=10)
        calls = [merger.infer(row(i), f"tf-{i % 2}", False) for i in range(41)]
        return list(await asyncio.gather(*calls)), service

    answers, service = asyncio.run(scenario())
    assert [a.labels[0] for a in answers] == [str(i) for i in range(41)]
    assert [a.transformation_version for a in answers] == [f"tf-{i % 2}" for i in range(41)]
    assert max(service.calls) <= 10
    assert sum(service.calls) == 41


def test_a_failed_shared_call_fails_each_of_its_records() -> None:
    async def scenario() -> list[Any]:
        service = FakeService()
        merger = coalescer(service, max_in_flight=1)
        first = asyncio.ensure_future(merger.infer(row(0), "tf-1", False))
        queued = [asyncio.ensure_future(merger.infer(row(i), "tf-1", False)) for i in range(1, 6)]
        await asyncio.sleep(0)  # the first in flight alone, the others queued
        service.fail_next = ModelCallError(Outcome.UNAVAILABLE, "replica gone")
        assert (await first).labels == ["0"]
        failures = list(await asyncio.gather(*queued, return_exceptions=True))
        assert service.calls == [1, 5]
        return failures

    failures = asyncio.run(scenario())
    assert all(isinstance(f, ModelCallError) for f in failures)
    assert all(f.status == "unavailable" and f.message == "replica gone" for f in failures)
    assert len({id(f) for f in failures}) == len(failures)  # one exception per caller


def test_a_caller_past_its_deadline_leaves_the_queue() -> None:
    async def scenario() -> tuple[list[Any], FakeService]:
        service = FakeService(delay=0.05)
        merger = coalescer(service, max_in_flight=1)

        async def impatient(value: int) -> Any:
            try:
                async with asyncio.timeout(0.01):
                    return await merger.infer(row(value), "tf-1", False)
            except TimeoutError:
                return "timeout"

        results = await asyncio.gather(
            merger.infer(row(0), "tf-1", False),
            impatient(1),
            merger.infer(row(2), "tf-1", False),
        )
        return list(results), service

    results, service = asyncio.run(scenario())
    assert results[0].labels == ["0"]
    assert results[1] == "timeout"
    assert results[2].labels == ["2"]
    assert service.calls == [1, 1]  # the impatient record was never sent


@pytest.mark.parametrize("probabilities", [False, True])
def test_alone_when_idle(probabilities: bool) -> None:
    async def scenario() -> tuple[inference.InferOutput, FakeService]:
        service = FakeService(delay=0)
        merger = coalescer(service)
        return await merger.infer(row(7), "tf-1", probabilities), service

    answer, service = asyncio.run(scenario())
    assert answer.labels == ["7"]
    assert service.calls == [1]


def test_a_short_answer_is_an_error_for_each_record_never_a_misaligned_row() -> None:
    class Short(FakeService):
        async def infer(
            self,
            features: np.ndarray,
            version: str,
            probabilities: bool,
            request_ids: list[str] | tuple[str, ...] = (),
            confidence: bool = False,
        ) -> inference.InferOutput:
            output = await super().infer(features, version, probabilities, request_ids)
            return inference.InferOutput(
                output.model_version, version, output.labels[:-1] or ["0"], None, None
            )

    async def scenario() -> list[Any]:
        merger = coalescer(Short(), max_in_flight=1)
        calls = [merger.infer(row(i), "tf-1", False) for i in range(4)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    first, *rest = asyncio.run(scenario())
    assert first.labels == ["0"]  # alone: one row asked, one answered
    assert all(isinstance(r, ModelCallError) and r.status == "error" for r in rest)
