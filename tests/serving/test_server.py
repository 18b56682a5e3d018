"""The model server in-process over real gRPC: protocol, status codes, readiness, hot swaps."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from crimes import contract
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.proto_gen.inference import grpc_service_pb2_grpc as pb_grpc
from crimes.protocol import inference
from crimes.registry.onnx_form import OnnxClassifier, Prediction
from crimes.serving.model import LoadedModel
from tests.serving.harness import (
    NAME,
    FakeRegistry,
    Running,
    ServerThread,
    running,
    settings,
    until,
)
from tests.serving.malformed import CASES, Case, Target
from tests.serving.models import Trained, bundle, labels, probabilities


def _target(trained: Trained, version: str = "1") -> Target:
    return Target(NAME, version, trained.transformation_version, trained.train.shape[1], 1_200)


async def _infer(
    live: Running,
    trained: Trained,
    rows: np.ndarray,
    *,
    raw: bool = True,
    probabilities: bool = False,
    confidence: bool = False,
) -> inference.InferOutput:
    request = inference.infer_request(
        NAME,
        rows,
        trained.transformation_version,
        raw=raw,
        probabilities=probabilities,
        confidence=confidence,
    )
    return inference.decode_infer_response(await live.stub.ModelInfer(request, timeout=10))


def test_liveness_at_once_readiness_only_with_a_model(tmp_path: Path, dtc: Trained) -> None:
    registry = FakeRegistry()
    registry.reachable = False

    async def scenario() -> None:
        async with running(settings(tmp_path), registry) as live:
            assert (await live.stub.ServerLive(pb.ServerLiveRequest())).live
            await asyncio.sleep(0.2)  # several polls against the unreachable registry
            assert not (await live.stub.ServerReady(pb.ServerReadyRequest())).ready
            assert not (await live.stub.ModelReady(pb.ModelReadyRequest(name=NAME))).ready
            for service in ("", NAME, "inference.GRPCInferenceService"):
                assert await live.health(service) == "NOT_SERVING"
            # Alive without a model: what Kubernetes' liveness probe asks.
            assert await live.health("liveness") == "SERVING"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await live.stub.ModelInfer(_target(dtc).valid())
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "not loaded yet" in str(refused.value.details())

            registry.publish("1", bundle(dtc, NAME, "1"))
            registry.reachable = True
            await until(lambda: live.server.runtime.ready)
            assert (await live.stub.ServerReady(pb.ServerReadyRequest())).ready
            assert (await live.stub.ModelReady(pb.ModelReadyRequest(name=NAME, version="1"))).ready
            assert not (
                await live.stub.ModelReady(pb.ModelReadyRequest(name=NAME, version="2"))
            ).ready
            assert not (await live.stub.ModelReady(pb.ModelReadyRequest(name="other"))).ready
            for service in ("", NAME, "inference.GRPCInferenceService"):
                assert await live.health(service) == "SERVING"

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["dtc", "lda"])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_predictions_are_the_models_own(
    tmp_path: Path, kind: str, raw: bool, request: pytest.FixtureRequest
) -> None:
    trained: Trained = request.getfixturevalue(kind)
    registry = FakeRegistry()
    registry.publish("1", bundle(trained, NAME, "1"))

    async def scenario() -> None:
        async with running(settings(tmp_path), registry) as live:
            await until(lambda: live.server.runtime.ready)
            small = await _infer(live, trained, trained.test[:5], raw=raw)
            full = await _infer(live, trained, trained.test, raw=raw, probabilities=True)
        assert small.labels == labels(trained, trained.test[:5])
        assert small.probabilities is None
        assert (small.model_version, small.transformation_version) == (
            "1",
            trained.transformation_version,
        )
        assert full.labels == labels(trained, trained.test)
        assert full.probabilities is not None
        # The ONNX form's probabilities (float32 arithmetic), the classifier's to 1e-5.
        np.testing.assert_allclose(
            full.probabilities, probabilities(trained, trained.test), rtol=0, atol=1e-5
        )
        assert full.classes == tuple(str(c) for c in trained.model.classes_)

    asyncio.run(scenario())


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_confidence_is_each_rows_top_probability(tmp_path: Path, lda: Trained, raw: bool) -> None:
    """What the prediction log keeps of a model's certainty: FP32, a value per row, without
    the probabilities' bytes."""
    registry = FakeRegistry()
    registry.publish("1", bundle(lda, NAME, "1"))

    async def scenario() -> inference.InferOutput:
        async with running(settings(tmp_path), registry) as live:
            await until(lambda: live.server.runtime.ready)
            return await _infer(live, lda, lda.test, raw=raw, confidence=True)

    answer = asyncio.run(scenario())
    assert answer.labels == labels(lda, lda.test)
    assert answer.probabilities is None
    assert answer.confidence is not None
    assert answer.confidence.dtype == np.float32
    np.testing.assert_allclose(
        answer.confidence, probabilities(lda, lda.test).max(axis=1), rtol=0, atol=1e-5
    )


def test_calls_past_the_concurrency_bound_are_resource_exhausted(
    tmp_path: Path, dtc: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = FakeRegistry()
    registry.publish("1", bundle(dtc, NAME, "1"))
    real_predict = LoadedModel.predict

    def slow(self: LoadedModel, features: Any, probabilities: bool) -> Any:
        time.sleep(0.5)  # a call that holds its slot
        return real_predict(self, features, probabilities)

    async def scenario() -> list[Any]:
        async with running(
            settings(tmp_path, max_concurrent_rpcs=2, inline_rows=0), registry
        ) as live:
            await until(lambda: live.server.runtime.ready)
            monkeypatch.setattr(LoadedModel, "predict", slow)
            calls = [_infer(live, dtc, dtc.test[:3]) for _ in range(5)]
            return await asyncio.gather(*calls, return_exceptions=True)

    answers = asyncio.run(scenario())
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(refused) == 3
    assert {a.code() for a in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert all(not isinstance(a, Exception) for a in answers if a not in refused)
    # Bounded by default too, within the memory requests may take.
    defaults = settings(tmp_path)
    assert defaults.max_concurrent_rpcs == 24
    assert (
        defaults.memory_for(defaults.max_concurrent_rpcs, defaults.max_message_bytes)
        <= defaults.request_memory_bytes
    )


def test_metadata_names_the_transformation_run_and_classes(tmp_path: Path, lda: Trained) -> None:
    registry = FakeRegistry()
    published = bundle(lda, NAME, "4", run_id="run-4")
    registry.publish("4", published)

    async def scenario() -> pb.ModelMetadataResponse:
        async with running(settings(tmp_path), registry) as live:
            await until(lambda: live.server.runtime.ready)
            server = await live.stub.ServerMetadata(pb.ServerMetadataRequest())
            assert server.name == "crimes-model-server"
            return await live.stub.ModelMetadata(pb.ModelMetadataRequest(name=NAME))

    metadata = asyncio.run(scenario())
    assert (metadata.name, list(metadata.versions), metadata.platform) == (
        NAME,
        ["4"],
        "onnxruntime_onnx",
    )
    # The datatype its ONNX form computes on: the features' cheapest exact form.
    assert next((i.name, i.datatype, list(i.shape)) for i in metadata.inputs) == (
        "features",
        OnnxClassifier(published.model, "published").datatype,
        [-1, lda.train.shape[1]],
    )
    # ... and the other form: a raw record, a tensor per feature of the contract.
    assert [i.name for i in metadata.inputs][1:] == list(contract.FEATURES)
    forms = json.loads(metadata.parameters["input_forms"].string_param)
    assert forms["records"] == list(contract.FEATURES)
    assert [(o.name, o.datatype, list(o.shape)) for o in metadata.outputs] == [
        ("fbi_code", "BYTES", [-1]),
        ("probabilities", "FP64", [-1, len(lda.model.classes_)]),
        ("confidence", "FP32", [-1]),
        ("fbi_code_index", "INT32", [-1]),
    ]
    parameters = inference.parameters_dict(metadata.parameters)
    assert parameters["transformation_version"] == lda.transformation_version
    assert parameters["run_id"] == "run-4"
    assert parameters["source"] == "mlflow"
    assert parameters["location"] == f"models:/{NAME}/4"
    assert "transformation_uri" not in parameters  # the gateway finds it in the registry
    assert json.loads(parameters["classes"]) == [str(c) for c in lda.model.classes_]
    assert json.loads(parameters["feature_names"]) == lda.feature_names
    assert parameters["max_batch_rows"] == 1_200


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory, dtc: Trained) -> Iterator[ServerThread]:
    registry = FakeRegistry()
    registry.publish("1", bundle(dtc, NAME, "1"))
    config = settings(tmp_path_factory.mktemp("shared"))
    with ServerThread(config, registry, []) as server:
        server.wait_ready()
        yield server


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_malformed_requests_get_their_status_code(
    shared_server: ServerThread, dtc: Trained, case: Case
) -> None:
    with grpc.insecure_channel(shared_server.address) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None,
            response_deserializer=None,
        )
        built = case.build(_target(dtc))
        data = built if isinstance(built, bytes) else built.SerializeToString()
        with pytest.raises(grpc.RpcError) as refused:
            call(data, timeout=10)
        error: Any = refused.value
        assert error.code() == case.code, error.details()
        assert case.message in str(error.details())
        # The server is unharmed: the next valid request is answered.
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelInfer(_target(dtc).valid(), timeout=10).model_version == "1"


def test_the_catalogue_of_malformed_requests_is_distinct_and_large_enough() -> None:
    assert len({c.kind for c in CASES}) == len(CASES) >= 20


def test_metadata_of_an_unknown_model_or_version_is_not_found(tmp_path: Path, dtc: Trained) -> None:
    registry = FakeRegistry()
    registry.publish("1", bundle(dtc, NAME, "1"))

    async def scenario() -> None:
        async with running(settings(tmp_path), registry) as live:
            await until(lambda: live.server.runtime.ready)
            for request in (
                pb.ModelMetadataRequest(name="other"),
                pb.ModelMetadataRequest(name=NAME, version="2"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await live.stub.ModelMetadata(request)
                assert refused.value.code() == grpc.StatusCode.NOT_FOUND

    asyncio.run(scenario())


def test_a_new_version_is_swapped_in_while_requests_flow(
    tmp_path: Path, dtc: Trained, dtc_other: Trained
) -> None:
    assert dtc.transformation_version == dtc_other.transformation_version
    registry = FakeRegistry()
    registry.publish("1", bundle(dtc, NAME, "1"))
    rows = dtc.test[:8]
    expected = {
        "1": labels(dtc, rows),
        "2": labels(dtc_other, rows),
    }
    assert expected["1"] != expected["2"]

    async def scenario() -> list[list[str]]:
        async with running(settings(tmp_path), registry) as live:
            await until(lambda: live.server.runtime.ready)
            stop = asyncio.Event()

            async def client() -> list[str]:
                seen: list[str] = []
                while not stop.is_set():
                    answer = await _infer(live, dtc, rows)
                    assert answer.labels == expected[answer.model_version]
                    seen.append(answer.model_version)
                return seen

            clients = [asyncio.create_task(client()) for _ in range(4)]
            registry.gate = threading.Event()
            registry.publish("2", bundle(dtc_other, NAME, "2"))
            await until(lambda: registry.loads == ["1", "2"])
            # Version 2 is half-loaded (its load is held): version 1 keeps answering.
            await asyncio.sleep(0.2)
            assert live.server.runtime.current is not None
            assert live.server.runtime.current.version == "1"
            registry.gate.set()
            await until(lambda: live.server.runtime.current.version == "2")  # type: ignore[union-attr]
            await asyncio.sleep(0.2)
            stop.set()
            return list(await asyncio.gather(*clients))

    for seen in asyncio.run(scenario()):
        assert seen[0] == "1"
        assert seen[-1] == "2"
        assert seen == sorted(seen), "a client saw version 1 again after version 2"
    assert (tmp_path / "serving" / NAME / "last-good" / "metadata.json").is_file()


def test_a_failed_load_keeps_the_old_version_and_is_not_retried_at_once(
    tmp_path: Path, dtc: Trained, dtc_other: Trained
) -> None:
    registry = FakeRegistry()
    registry.publish("1", bundle(dtc, NAME, "1"))

    async def scenario() -> str:
        async with running(settings(tmp_path), registry) as live:
            await until(lambda: live.server.runtime.ready)
            registry.publish("2", RuntimeError("artifact store unreachable"))
            await until(lambda: "2" in registry.loads)
            await asyncio.sleep(0.3)  # several more polls: version 2 is not loaded again
            assert registry.loads == ["1", "2"]
            answer = await _infer(live, dtc, dtc.test[:3])
            assert answer.model_version == "1"
            registry.publish("3", bundle(dtc_other, NAME, "3", run_id="run-3"))
            await until(lambda: live.server.runtime.current.version == "3")  # type: ignore[union-attr]
            async with httpx.AsyncClient(trust_env=False) as http:
                page = await http.get(f"http://127.0.0.1:{live.server.metrics_port}/metrics")
            return page.text

    metrics = asyncio.run(scenario())
    assert f'crimes_model_reloads_total{{model="{NAME}",outcome="failed"}} 1.0' in metrics
    assert f'crimes_model_reloads_total{{model="{NAME}",outcome="loaded"}} 2.0' in metrics
    assert 'crimes_model_loaded{model="test_model",run_id="run-3",source="mlflow"' in metrics
    assert (
        'crimes_model_requests_total{method="ModelInfer",model="test_model",status="OK",'
        'version="1"} 1.0'
    ) in metrics
    assert 'version="2"' not in metrics


def test_large_batches_are_predicted_off_the_event_loop(tmp_path: Path, lda: Trained) -> None:
    registry = FakeRegistry()
    registry.publish("1", bundle(lda, NAME, "1"))
    rows = np.vstack([lda.test] * 3)

    async def scenario() -> inference.InferOutput:
        async with running(settings(tmp_path, inline_rows=4), registry) as live:
            await until(lambda: live.server.runtime.ready)
            return await _infer(live, lda, rows, probabilities=True)

    answer = asyncio.run(scenario())
    assert answer.labels == labels(lda, rows)
    assert answer.probabilities is not None
    np.testing.assert_allclose(answer.probabilities, probabilities(lda, rows), rtol=0, atol=1e-5)


def test_reflection_lists_the_services_and_serves_the_protocol_file(
    tmp_path: Path, dtc: Trained
) -> None:
    registry = FakeRegistry()

    async def scenario() -> tuple[list[str], list[bytes]]:
        async with running(settings(tmp_path), registry) as live:
            stub = reflection_pb2_grpc.ServerReflectionStub(live.channel)
            requests = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="inference.GRPCInferenceService"
                ),
            ]
            answers = [a async for a in stub.ServerReflectionInfo(iter(requests))]
            services = [s.name for s in answers[0].list_services_response.service]
            files = list(answers[1].file_descriptor_response.file_descriptor_proto)
            return services, files

    services, files = asyncio.run(scenario())
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= set(services)
    assert any(b"inference/grpc_service.proto" in f and b"ModelInfer" in f for f in files)


def test_an_unexpected_error_is_internal_never_unknown(tmp_path: Path, dtc: Trained) -> None:
    registry = FakeRegistry()
    registry.publish("1", bundle(dtc, NAME, "1"))

    class Broken(OnnxClassifier):
        def __init__(self) -> None:  # no session: every prediction fails
            pass

        def predict(self, features: np.ndarray, probabilities: bool) -> Prediction:
            raise ZeroDivisionError("a bug")

    async def scenario() -> None:
        async with running(settings(tmp_path), registry) as live:
            await until(lambda: live.server.runtime.ready)
            current = live.server.runtime.current
            assert current is not None
            live.server.runtime.current = dataclasses.replace(current, classifier=Broken())
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await _infer(live, dtc, dtc.test[:2])
            assert failed.value.code() == grpc.StatusCode.INTERNAL
            assert "internal error (ZeroDivisionError)" in str(failed.value.details())
            live.server.runtime.current = current
            assert (await _infer(live, dtc, dtc.test[:2])).model_version == "1"

    asyncio.run(scenario())
