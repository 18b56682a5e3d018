"""Which failed model calls the gateway sends again, against a real gRPC server on a socket: a
call the model service cancelled (a replica stopping) is retried like UNAVAILABLE; a call the
gateway cancelled itself is never sent again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import numpy as np
import pytest

from crimes.gateway.backends import ModelService
from crimes.gateway.calls import ModelCallError
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.proto_gen.inference import grpc_service_pb2_grpc as pb_grpc
from crimes.protocol import inference
from crimes.protocol.outcomes import Outcome


class Replica(pb_grpc.GRPCInferenceServiceServicer):
    """Answers "07" per row, after failing its first `failures` calls with `code`, each call
    taking `seconds`."""

    def __init__(self, code: grpc.StatusCode, failures: int, seconds: float = 0.0) -> None:
        self.code, self.failures, self.seconds = code, failures, seconds
        self.calls = 0

    async def ModelInfer(  # type: ignore[override]  # the stub's signature spans sync and aio
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        self.calls += 1
        await asyncio.sleep(self.seconds)
        if self.calls <= self.failures:
            await context.abort(self.code, "the replica is stopping")
        rows = request.inputs[0].shape[0]
        response = pb.ModelInferResponse(model_name="m", model_version="1")
        output = response.outputs.add(name=inference.LABELS, datatype="BYTES", shape=[rows])
        output.contents.bytes_contents.extend([b"07"] * rows)
        return response


@asynccontextmanager
async def serving(replica: Replica, retries: int) -> AsyncIterator[ModelService]:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(replica, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    service = ModelService("m", f"127.0.0.1:{port}", deadline_seconds=5.0, retries=retries)
    try:
        yield service
    finally:
        await service.close()
        await server.stop(None)


@pytest.mark.parametrize("code", [grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE])
def test_a_call_the_replica_cancelled_or_could_not_take_is_sent_again(
    code: grpc.StatusCode,
) -> None:
    async def scenario() -> tuple[list[str], int]:
        replica = Replica(code, failures=1)
        async with serving(replica, retries=1) as service:
            output = await service.infer(np.zeros((2, 3)), "tf-1", False)
        return list(output.labels), replica.calls

    labels, calls = asyncio.run(scenario())
    assert labels == ["07", "07"]
    assert calls == 2


@pytest.mark.parametrize(
    ("code", "failures", "retries", "outcome", "calls"),
    [
        # Cancelled past its retries: nothing answered, the model unavailable.
        (grpc.StatusCode.CANCELLED, 5, 1, Outcome.UNAVAILABLE, 2),
        # Failed for another reason: the other side's error, never sent again.
        (grpc.StatusCode.INTERNAL, 1, 2, Outcome.ERROR, 1),
    ],
)
def test_a_failed_call_is_sent_again_only_while_retrying_may_help(
    code: grpc.StatusCode, failures: int, retries: int, outcome: Outcome, calls: int
) -> None:
    async def scenario() -> tuple[ModelCallError, int]:
        replica = Replica(code, failures=failures)
        async with serving(replica, retries=retries) as service:
            with pytest.raises(ModelCallError) as raised:
                await service.infer(np.zeros((1, 3)), "tf-1", False)
        return raised.value, replica.calls

    error, made = asyncio.run(scenario())
    assert error.outcome is outcome
    assert made == calls


def test_a_call_the_gateway_cancelled_is_never_sent_again() -> None:
    async def scenario() -> int:
        replica = Replica(grpc.StatusCode.OK, failures=0, seconds=0.5)
        async with serving(replica, retries=3) as service:
            call = asyncio.create_task(service.infer(np.zeros((1, 3)), "tf-1", False))
            while replica.calls == 0:
                await asyncio.sleep(0.01)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await asyncio.sleep(0.3)  # a retry, had there been one, would have reached it
        return replica.calls

    assert asyncio.run(scenario()) == 1


class OlderReplica(Replica):
    """A model service from before the labels' indices: refuses the output as such a service
    did (an unknown output name), answers the labels themselves."""

    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.OK, failures=0)
        self.asked: list[tuple[str, ...]] = []

    async def ModelInfer(  # type: ignore[override]  # the stub's signature spans sync and aio
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        self.asked.append(tuple(o.name for o in request.outputs))
        if inference.LABEL_INDEX in self.asked[-1]:
            self.calls += 1
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown output '{inference.LABEL_INDEX}': outputs are 'fbi_code', "
                "'probabilities', 'confidence'",
            )
        return await super().ModelInfer(request, context)


def test_a_replica_older_than_the_metadata_read_gets_asked_for_the_labels_themselves() -> None:
    async def scenario() -> tuple[list[str], bool, list[tuple[str, ...]]]:
        replica = OlderReplica()
        async with serving(replica, retries=0) as service:
            service.state.label_index = True  # what another, newer replica advertised
            first = await service.infer(np.zeros((2, 3)), "tf-1", False, confidence=False)
            await service.infer(np.zeros((1, 3)), "tf-1", False)
        return list(first.labels), service.state.label_index, replica.asked

    labels, indexed, asked = asyncio.run(scenario())
    assert labels == ["07", "07"]
    assert not indexed  # until a refresh says otherwise
    assert asked == [("fbi_code_index",), (), ()]
