"""Overload: the gateway and a model service offered four times what they can answer.

The gateway's saturation rate is measured first (closed loop, real test records, no prediction
cache), then the same records are offered open-loop at 4x that rate. Every answer must be either
the models' own prediction for the record sent (checked against the registered models offline)
or a clean 503 with Retry-After; the gateway's memory must stay flat; it answers normally once
the load is gone. A model service over gRPC, kept at four times the calls it admits: OK with
the right labels, or RESOURCE_EXHAUSTED, never UNKNOWN; its memory flat. Run with -s for the
figures.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from crimes import registry
from crimes.lake import datasets
from crimes.lake.storage import Lake
from crimes.local import launch
from crimes.local.launch import LocalProcess
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.proto_gen.inference import grpc_service_pb2_grpc as pb_grpc
from crimes.protocol import inference
from crimes.registry import artifacts
from crimes.settings import TrackingSettings
from tests.gateway.test_gateway_e2e import records
from tests.support.load import (
    Client,
    MemorySampler,
    closed_loop,
    open_loop,
    request_bytes,
    rss_mib,
    sender,
)
from tests.support.stack import YEAR

pytestmark = pytest.mark.e2e

RECORDS = 400
OVERLOAD = 4.0
SECONDS = 8.0
# What "flat" allows: the last third of the run may not hold more than the first third plus
# this, and nothing may grow past the warm process by more than the ceiling.
DRIFT_MIB = 24.0
CEILING_MIB = 96.0


@pytest.fixture(scope="module")
def expected(trained: dict[str, Any]) -> dict[str, Any]:
    """Real test records and each model's own answer for them, offline."""
    final = datasets.load_final(Lake(), YEAR)
    matrix = final.X_test.head(RECORDS).to_numpy(dtype=np.float64)
    import mlflow

    uri = TrackingSettings().tracking_uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    answers = {}
    for kind, name in registry.MODELS.items():
        version = client.get_model_version_by_alias(name, registry.CHAMPION).version
        model = artifacts.load_version_model(uri, name, str(version))
        answers[kind] = [str(label) for label in model.predict(matrix)]
    return {
        "records": records(final.features_test.head(RECORDS)),
        "matrix": matrix,
        "dtc": answers["dtc"],
        "lda": answers["lda"],
    }


@pytest.fixture(scope="module")
def stack_under_test(
    trained: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LocalProcess]]:
    folder = tmp_path_factory.mktemp("overload")
    services = {
        kind: launch.serve(LocalProcess, kind, {"CRIMES_MODEL_MAX_CONCURRENT_RPCS": "8"}, folder)
        for kind in ("dtc", "lda")
    }
    try:
        for service in services.values():
            service.wait_healthy()
        env = {
            "CRIMES_GATEWAY_DTC_ADDRESS": f"dns:///{services['dtc'].address}",
            "CRIMES_GATEWAY_LDA_ADDRESS": f"dns:///{services['lda'].address}",
            "CRIMES_GATEWAY_TRACKING_URI": TrackingSettings().tracking_uri,
            "CRIMES_GATEWAY_MAX_IN_FLIGHT": "64",
            "CRIMES_GATEWAY_DEADLINE_SECONDS": "2",
        }
        with launch.serving("gateway", env, folder / "gateway") as gateway:
            yield {**services, "gateway": gateway}
    finally:
        for service in services.values():
            service.stop()


def _flat(samples: list[float], start: float) -> str:
    """Checks the memory stayed flat; the figures as printed."""
    third = max(1, len(samples) // 3)
    first, last = max(samples[:third]), max(samples[-third:])
    assert last <= first + DRIFT_MIB, f"memory grew: {first:.0f} -> {last:.0f} MiB"
    assert max(samples) <= start + CEILING_MIB, f"memory {max(samples):.0f} MiB from {start:.0f}"
    return f"RSS start/max/end {start:.0f}/{max(samples):.0f}/{samples[-1]:.0f} MiB"


def test_the_gateway_at_four_times_its_saturation(
    stack_under_test: dict[str, LocalProcess], expected: dict[str, Any]
) -> None:
    gateway = stack_under_test["gateway"]
    bodies = [json.dumps({"features": r}).encode() for r in expected["records"]]
    requests = [request_bytes(gateway.host, gateway.port, "/predict", b) for b in bodies]

    async def run() -> tuple[float, Any, list[float], float]:
        client = Client(gateway.host, gateway.port, max_connections=512)
        warm = await closed_loop(sender(client, requests), workers=16, seconds=3)
        assert {a.status for a in warm} == {200}, Counter(a.status for a in warm)
        start_mib = rss_mib(gateway.process.pid)
        measured = await closed_loop(sender(client, requests), workers=32, seconds=5)
        saturation = sum(a.status == 200 for a in measured) / 5
        with MemorySampler(gateway.process.pid) as memory:
            result = await open_loop(client, requests, OVERLOAD * saturation, SECONDS)
        client.close()
        return saturation, result, memory.samples, start_mib

    saturation, result, samples, start_mib = asyncio.run(run())
    statuses = result.by_status()
    print(
        f"\ngateway: saturation {saturation:.0f} req/s; offered {result.offered_per_second:.0f} "
        f"req/s ({OVERLOAD:.0f}x), sent {result.sent_per_second:.0f} req/s for "
        f"{result.seconds:.1f} s; answers {statuses}; {_flat(samples, start_mib)}"
    )
    assert set(statuses) <= {"200", "503"}, statuses
    assert statuses.get("503", 0) > 0, "the load never exceeded what the gateway takes"
    assert statuses.get("200", 0) > 0
    for answer in result.answers:
        if answer.status == 503:
            assert answer.headers.get("retry-after") == "1"
            continue
        row = answer.index % len(bodies)
        assert json.loads(answer.body) == {
            "dtc_fbi_code_output": expected["dtc"][row],
            "lda_fbi_code_output": expected["lda"][row],
        }, row
    assert result.sent_per_second >= 0.9 * result.offered_per_second

    # Once the load is gone it answers as before.
    async def after() -> list[Any]:
        client = Client(gateway.host, gateway.port, max_connections=4)
        answers = await closed_loop(sender(client, requests), workers=2, seconds=1)
        client.close()
        return answers

    assert {a.status for a in asyncio.run(after())} == {200}


def test_a_model_service_at_four_times_the_calls_it_admits(
    trained: dict[str, Any], expected: dict[str, Any], tmp_path: Path
) -> None:
    """Straight over gRPC (no gateway in front). A Python client cannot offer four times a
    model service's call rate, so the overload here is in concurrency: four times as many
    calls kept outstanding as the service admits (2 here: a single-row call takes well under a
    millisecond, so a larger bound is rarely reached by one Python client). Past its bound it
    answers RESOURCE_EXHAUSTED at once; every OK carries the right label; its memory stays
    flat."""
    name = registry.MODELS["lda"]
    matrix = expected["matrix"]
    bound = 2

    async def run() -> tuple[float, float, Counter[str], list[float], float]:
        async with grpc.aio.insecure_channel(service.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            metadata = inference.decode_model_metadata(
                await stub.ModelMetadata(pb.ModelMetadataRequest(name=name))
            )
            requests = [
                inference.infer_request(
                    name, matrix[row : row + 1], metadata.transformation_version
                )
                for row in range(len(matrix))
            ]
            wrong: list[int] = []

            async def call(i: int) -> str:
                row = i % len(matrix)
                try:
                    answer = await stub.ModelInfer(requests[row], timeout=5)
                except grpc.aio.AioRpcError as error:
                    return error.code().name
                if inference.decode_infer_response(answer).labels != [expected["lda"][row]]:
                    wrong.append(row)
                return "OK"

            async def closed(workers: int, seconds: float) -> Counter[str]:
                return Counter(await closed_loop(call, workers, seconds))

            await closed(4, 2)
            start_mib = rss_mib(service.process.pid)
            # Below the bound: the calls it completes per second.
            saturation = (await closed(1, 4))["OK"] / 4
            with MemorySampler(service.process.pid) as memory:
                codes = await closed(int(OVERLOAD * bound), SECONDS)
            assert not wrong, f"wrong labels for rows {wrong[:10]}"
            return saturation, codes["OK"] / SECONDS, codes, memory.samples, start_mib

    env = {"CRIMES_MODEL_MAX_CONCURRENT_RPCS": str(bound)}
    with launch.serving("lda", env, tmp_path) as service:
        saturation, goodput, codes, samples, start_mib = asyncio.run(run())
    print(
        f"\nlda service: {saturation:.0f} calls/s one at a time (bound {bound}); with "
        f"{OVERLOAD * bound:.0f} calls outstanding for {SECONDS:.0f} s: {goodput:.0f} OK/s, "
        f"answers {dict(codes)}; {_flat(samples, start_mib)}"
    )
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert codes["RESOURCE_EXHAUSTED"] > 0, "the load never exceeded the service's bound"
    assert codes["OK"] > 0
