"""The gateway's background refreshes: single flight, backed off while a service stays down,
and never held back by a hung MLflow."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import grpc
import pytest

from crimes.gateway import backends
from crimes.gateway.backends import ModelService
from crimes.gateway.cache import PredictionCache
from crimes.gateway.calls import ServiceState
from crimes.gateway.metrics import GatewayMetrics
from crimes.gateway.predict import Predictor
from crimes.gateway.transformation_store import TransformationStore
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.proto_gen.inference import grpc_service_pb2_grpc as pb_grpc


class Counted:
    """`metadata_state` double: counts the calls, answers after `delay`."""

    def __init__(self, delay: float = 0.05, ready: bool = False) -> None:
        self.calls = 0
        self.delay = delay
        self.ready = ready

    async def __call__(self, stub: Any, name: str, deadline: float) -> ServiceState:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return ServiceState(
            ready=self.ready,
            model_version="3" if self.ready else None,
            transformation_version="tf-3" if self.ready else None,
        )


def test_concurrent_refreshes_share_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = Counted(ready=True)
    monkeypatch.setattr(backends, "metadata_state", counted)

    async def scenario() -> None:
        service = ModelService("m", "127.0.0.1:1", deadline_seconds=1.0, retries=0)
        try:
            states = await asyncio.gather(*(service.refresh() for _ in range(20)))
        finally:
            await service.close()
        assert counted.calls == 1
        assert {state.model_version for state in states} == {"3"}

    asyncio.run(scenario())


def test_a_burst_of_unavailable_answers_is_one_refresh_then_backed_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted = Counted(delay=0.01)
    monkeypatch.setattr(backends, "metadata_state", counted)

    async def scenario() -> None:
        service = ModelService("m", "127.0.0.1:1", deadline_seconds=1.0, retries=0)
        try:
            for _ in range(500):  # one per failed call, as the predictor asks
                service.refresh_soon()
            await asyncio.sleep(0.05)
            assert counted.calls == 1
            # Still down: the next refreshes come after 0.2, 0.4, 0.8 ... s, not per call.
            started = time.monotonic()
            while time.monotonic() - started < 1.0:
                service.refresh_soon()
                await asyncio.sleep(0.005)
            assert 2 <= counted.calls <= 4, counted.calls
        finally:
            await service.close()

    asyncio.run(scenario())


def test_a_hung_mlflow_never_holds_the_metadata_refresh_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted = Counted(delay=0.0, ready=True)
    monkeypatch.setattr(backends, "metadata_state", counted)
    hung = threading.Event()
    store = TransformationStore("http://127.0.0.1:1")
    monkeypatch.setattr(store, "_load", lambda *args: hung.wait(30))

    async def scenario() -> None:
        services = {
            kind: ModelService(f"{kind}_model_prod", "127.0.0.1:1", 1.0, 0) for kind in ("dtc",)
        }
        predictor = Predictor(services, store, GatewayMetrics(), PredictionCache(None, 1))
        try:
            for _ in range(3):
                await asyncio.wait_for(predictor.refresh(), timeout=1.0)
            assert counted.calls == 3
            assert len(store._loading) == 1  # one load of the version, hanging, not three
        finally:
            hung.set()
            for service in services.values():
                await service.close()

    asyncio.run(scenario())


class Answers:
    """`metadata_state` double: answers the states it is given, in turn."""

    def __init__(self, *states: ServiceState) -> None:
        self.states = list(states)

    async def __call__(self, stub: Any, name: str, deadline: float) -> ServiceState:
        return self.states.pop(0)


READY = ServiceState(ready=True, model_version="3", transformation_version="tf-3")
LATE = ServiceState(ready=False, error="Deadline Exceeded", timed_out=True)
GONE = ServiceState(ready=False, error="failed to connect to all addresses")


@pytest.mark.parametrize(
    ("answers", "ready"),
    [
        # Late twice in a row: what it said last holds; the third time it is not ready.
        ((READY, LATE, LATE), [True, True, True]),
        ((READY, LATE, LATE, LATE), [True, True, True, False]),
        # An answer in between starts the count again.
        ((READY, LATE, LATE, READY, LATE, LATE), [True] * 6),
        # Gone (not late) is not ready at once; late before any answer is not ready either.
        ((READY, GONE), [True, False]),
        ((LATE,), [False]),
    ],
)
def test_a_late_metadata_answer_keeps_what_a_ready_service_last_said(
    monkeypatch: pytest.MonkeyPatch, answers: tuple[ServiceState, ...], ready: list[bool]
) -> None:
    monkeypatch.setattr(backends, "metadata_state", Answers(*answers))

    async def scenario() -> list[bool]:
        service = ModelService("m", "127.0.0.1:1", deadline_seconds=1.0, retries=0)
        try:
            states = [await service.refresh() for _ in answers]
        finally:
            await service.close()
        assert all(s.transformation_version == "tf-3" for s in states if s.ready)
        return [state.ready for state in states]

    assert asyncio.run(scenario()) == ready


class SlowMetadata(pb_grpc.GRPCInferenceServiceServicer):
    async def ModelReady(  # type: ignore[override]  # the stub's signature spans sync and aio
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        await asyncio.sleep(1.0)
        return pb.ModelReadyResponse(ready=True)


def test_metadata_past_the_deadline_is_late_and_no_server_is_not() -> None:
    """Against a real gRPC server on a socket, then none."""

    async def scenario() -> tuple[ServiceState, ServiceState]:
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(SlowMetadata(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            late = await backends.metadata_state(stub, "m", 0.1)
            await server.stop(None)
            gone = await backends.metadata_state(stub, "m", 0.5)
        return late, gone

    late, gone = asyncio.run(scenario())
    assert (late.ready, late.timed_out) == (False, True)
    assert (gone.ready, gone.timed_out) == (False, False), gone.error
