from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from crimes.gateway.backends import ModelService, replicas
from crimes.gateway.cache import PredictionCache, cache_key
from crimes.gateway.calls import ModelCallError
from crimes.local.stack import free_port
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.protocol import inference
from crimes.protocol.outcomes import Outcome
from tests.support.dns import dns_server


def test_replicas_of_each_address_form() -> None:
    assert replicas("ipv4:127.0.0.1:50051,127.0.0.1:50053") == [
        "127.0.0.1:50051",
        "127.0.0.1:50053",
    ]
    assert replicas("dns:///127.0.0.1:50051") == ["127.0.0.1:50051"]
    assert replicas("127.0.0.1:50051") == ["127.0.0.1:50051"]
    assert replicas("dns:///no-such-host.invalid:1") == ["no-such-host.invalid:1"]


def test_replicas_through_the_dns_server_an_address_names() -> None:
    with dns_server() as (zone, port):
        address = f"dns://127.0.0.1:{port}/dtc.test:50051"
        zone.answer("dtc.test", ["127.0.0.2", "127.0.0.3"])
        assert replicas(address) == ["127.0.0.2:50051", "127.0.0.3:50051"]
        zone.answer("dtc.test", ["127.0.0.3"])
        assert replicas(address) == ["127.0.0.3:50051"]
        assert zone.queries == 2  # asked each time: /models shows the name's replicas now
        zone.answer("dtc.test", [])
        assert replicas(address) == ["dtc.test:50051"]  # no answer: the name itself


def test_cache_keys_change_with_anything_that_defines_the_answer() -> None:
    row = {"iucr": "0930", "beat": 412}
    served = {"dtc": ("dtc_model_prod", "1", "t1"), "lda": ("lda_model_prod", "1", "t1")}
    base = cache_key(row, served)
    assert base == cache_key(dict(reversed(list(row.items()))), dict(reversed(served.items())))
    for kind in ("dtc", "lda"):
        name, version, transformation = served[kind]
        for changed in (
            (f"{name}_other", version, transformation),
            (name, "2", transformation),
            (name, version, "t2"),
        ):
            assert base != cache_key(row, {**served, kind: changed})
    assert base != cache_key({**row, "beat": 413}, served)


def test_a_header_value_from_a_model_service_error_is_printable_and_short() -> None:
    from crimes.gateway.routes.predict import MAX_HEADER_VALUE, header_value

    assert header_value("dtc=unavailable: down\r\nSet-Cookie: x=1") == (
        "dtc=unavailable: down Set-Cookie: x=1"
    )
    assert header_value("é" * 10 + "ok") == "ok"
    assert len(header_value("x" * 10_000)) == MAX_HEADER_VALUE


def test_redis_down_is_no_cache_and_costs_nothing_after_the_first_try() -> None:
    async def scenario() -> tuple[object, float]:
        cache = PredictionCache(f"redis://127.0.0.1:{free_port()}/0", ttl_seconds=10)
        assert await cache.get("k") is None
        await cache.put("k", {"x": 1})
        started = time.perf_counter()
        for _ in range(100):
            await cache.get("k")
        elapsed = time.perf_counter() - started
        await cache.close()
        return await PredictionCache(None, 10).get("k"), elapsed

    missing, elapsed = asyncio.run(scenario())
    assert missing is None
    assert elapsed < 0.05  # not retried per request while it is down


def test_real_redis_round_trip() -> None:
    async def scenario() -> object:
        cache = PredictionCache("redis://127.0.0.1:6379/0", ttl_seconds=5)
        await cache.put("crimes:test:key", {"models": {}, "unknown": []})
        value = await cache.get("crimes:test:key")
        await cache.close()
        return value

    assert asyncio.run(scenario()) == {"models": {}, "unknown": []}


def test_large_buffers_come_from_the_heap_on_glibc() -> None:
    import platform

    from crimes.ops.memory import keep_large_buffers

    glibc = platform.libc_ver()[0] == "glibc"
    assert keep_large_buffers() is glibc


class AnsweringStub:
    """A gRPC stub double that answers every ModelInfer with one fixed response."""

    def __init__(self, response: Any) -> None:
        self.response = response

    async def ModelInfer(self, request: Any, timeout: float, metadata: Any = None) -> Any:
        return self.response


@pytest.mark.parametrize("answered_rows", [1, 3])
def test_a_model_call_answering_another_number_of_rows_fails_that_model(
    answered_rows: int,
) -> None:
    response = pb.ModelInferResponse(model_name="m", model_version="1")
    output = response.outputs.add(name=inference.LABELS, datatype="BYTES", shape=[answered_rows])
    output.contents.bytes_contents.extend([b"07"] * answered_rows)

    async def scenario() -> ModelCallError:
        service = ModelService("m", "127.0.0.1:1", deadline_seconds=1.0, retries=0)
        service.stub = AnsweringStub(response)  # type: ignore[assignment]
        try:
            await service.infer(np.zeros((2, 3)), "tf-1", False)
        except ModelCallError as error:
            return error
        finally:
            await service.close()
        raise AssertionError("a misaligned answer was accepted")

    error = asyncio.run(scenario())
    assert error.status == "error"
    assert f"answered {answered_rows} rows for 2" in error.message


def test_a_model_address_without_a_port_gets_its_deployments_port() -> None:
    from crimes.gateway.settings import GatewaySettings, with_deployment_port
    from crimes.settings import deployment_port

    dtc, lda = deployment_port("dtc"), deployment_port("lda")
    assert with_deployment_port("dns:///dtc", "dtc") == f"dns:///dtc:{dtc}"
    assert with_deployment_port("dns://10.0.0.53/lda", "lda") == f"dns://10.0.0.53/lda:{lda}"
    assert with_deployment_port("dns:///[::1]", "lda") == f"dns:///[::1]:{lda}"
    for given in ("dns:///dtc:6000", "dns:///[::1]:6000", "ipv4:127.0.0.1:1,127.0.0.1:2"):
        assert with_deployment_port(given, "dtc") == given
    settings = GatewaySettings()
    assert (settings.dtc_address, settings.lda_address) == (
        f"dns:///127.0.0.1:{dtc}",
        f"dns:///127.0.0.1:{lda}",
    )
    assert settings.port == deployment_port("gateway")


def test_a_result_reads_back_from_the_cache_as_it_was_answered() -> None:
    import json

    import numpy as np

    from crimes.gateway.predict import BatchResult, ModelResult

    answered = BatchResult(
        models={
            "dtc": ModelResult(
                outcome=Outcome.OK,
                labels=["07"],
                probabilities=np.ones((1, 2)),
                classes=("06", "07"),
                model_version="3",
                transformation_version="tf-a",
                latency_ms=0.4,
            ),
            "lda": ModelResult(
                outcome=Outcome.OK, labels=["07"], model_version="1", transformation_version="tf-a"
            ),
        },
        unknown=[["iucr"]],
    )
    # Through JSON, as Redis keeps it: the answers and versions, never probabilities or timings.
    cached = BatchResult.from_dict(json.loads(json.dumps(answered.to_dict())))
    assert cached.cached
    assert cached.unknown == [["iucr"]]
    for kind in ("dtc", "lda"):
        model = cached.models[kind]
        assert (model.outcome, model.labels, model.model_version) == (
            "ok",
            answered.models[kind].labels,
            answered.models[kind].model_version,
        )
        assert model.transformation_version == "tf-a"
        assert (model.probabilities, model.latency_ms) == (None, None)
