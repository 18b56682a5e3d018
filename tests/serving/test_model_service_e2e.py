"""The model services end to end: real `crimes serve` processes on free ports, a real MLflow
server (PostgreSQL, artifacts in SeaweedFS S3), models registered the way the training does, and an
inference client this project did not write (tritonclient, from PyPI)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import httpx
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from crimes import contract, registry
from crimes.lake.object_store import s3_client
from crimes.lake.storage import Lake
from crimes.local.settings import StackSettings
from crimes.proto_gen.inference import grpc_service_pb2_grpc as pb_grpc
from crimes.protocol import inference
from crimes.registry import Tag, bundles
from crimes.registry.onnx_form import OnnxClassifier
from crimes.serving.settings import ModelServerSettings
from tests.conftest import PROJECT_ROOT
from tests.serving.malformed import CASES, Case, Target
from tests.serving.models import Trained, bundle, onnx, train
from tests.serving.processes import ServiceProcess, move_alias, register, start_service
from tests.serving.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e

ROOT = PROJECT_ROOT
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CALLS = ModelServerSettings.model_fields["max_concurrent_rpcs"].default


@pytest.fixture(scope="module")
def suffix() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def models() -> dict[str, Trained]:
    """Fitted on the bare matrix, as the training fits them."""
    return {
        "dtc": train("dtc", on_array=True),
        "dtc_v2": train("dtc", max_depth=3, on_array=True),
        "lda": train("lda", on_array=True),
    }


@pytest.fixture(scope="module")
def names(suffix: str) -> dict[str, str]:
    return {kind: f"{name}_{suffix}" for kind, name in registry.MODELS.items()}


@pytest.fixture(scope="module")
def registered(
    stack_env: dict[str, str], models: dict[str, Trained], names: dict[str, str]
) -> dict[str, tuple[str, str]]:
    return {kind: register(models[kind], names[kind]) for kind in ("dtc", "lda")}


@pytest.fixture(scope="module")
def services(
    stack_env: dict[str, str],
    registered: dict[str, tuple[str, str]],
    names: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, ServiceProcess]]:
    folder = tmp_path_factory.mktemp("services")
    started = {
        kind: start_service(
            kind,
            names[kind],
            stack_env,
            folder / kind,
            max_message_bytes=MAX_MESSAGE_BYTES,
            request_memory_bytes=ModelServerSettings.memory_for(CALLS, MAX_MESSAGE_BYTES),
        )
        for kind in ("dtc", "lda")
    }
    try:
        for service in started.values():
            service.wait_until("SERVING")
        yield started
    finally:
        codes = {kind: service.stop() for kind, service in started.items()}
    assert codes == {"dtc": 0, "lda": 0}, "a service did not stop cleanly on SIGTERM"


def _offline(name: str, version: str, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The registered model's own predictions, loaded back from MLflow in this process."""
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    return [str(c) for c in model.predict(rows)], np.asarray(model.predict_proba(rows))


@pytest.mark.parametrize("kind", ["dtc", "lda"])
def test_tritonclient_gets_the_registered_models_own_predictions(
    kind: str,
    services: dict[str, ServiceProcess],
    models: dict[str, Trained],
    registered: dict[str, tuple[str, str]],
    tmp_path: Path,
) -> None:
    service, trained = services[kind], models[kind]
    version, run_id = registered[kind]
    rows = trained.test[:250]
    np.save(tmp_path / "features.npy", rows)
    request = {
        "address": service.address,
        "model": service.name,
        "features_file": str(tmp_path / "features.npy"),
        "transformation_version": trained.transformation_version,
    }
    result = subprocess.run(
        [sys.executable, "-m", "tests.serving.triton_calls"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout)

    assert (answer["server_live"], answer["server_ready"], answer["model_ready"]) == (True,) * 3
    assert not answer["other_model_ready"]
    assert answer["server_metadata"]["name"] == "crimes-model-server"
    metadata = answer["metadata"]
    assert metadata["name"] == service.name
    assert metadata["versions"] == [version]
    # Both input forms, as tritonclient reads them: the matrix (of the datatype its ONNX form
    # computes on; FP64 is taken too), then a tensor per feature.
    assert metadata["inputs"][0] == {
        "name": "features",
        "datatype": OnnxClassifier(onnx(trained), "the form").datatype,
        "shape": ["-1", str(rows.shape[1])],
    }
    assert [i["name"] for i in metadata["inputs"][1:]] == list(contract.FEATURES)
    assert all(i["shape"] == ["-1"] for i in metadata["inputs"][1:])
    assert [o["name"] for o in metadata["outputs"]] == [
        "fbi_code",
        "probabilities",
        "confidence",
        "fbi_code_index",
    ]

    labels, probabilities = _offline(service.name, version, rows)
    assert answer["labels"] == labels
    assert answer["probabilities_shape"] == list(probabilities.shape)
    served_probabilities = np.frombuffer(bytes.fromhex(answer["probabilities_hex"]), "<f8")
    # The ONNX form's probabilities (float32 arithmetic for most forms), the classifier's to 1e-5.
    np.testing.assert_allclose(
        served_probabilities.reshape(probabilities.shape), probabilities, rtol=0, atol=1e-5
    )
    # Each row's top probability (FP32), what the gateway's prediction log keeps.
    np.testing.assert_allclose(answer["confidence"], probabilities.max(axis=1), atol=1e-5)
    assert answer["model_version"] == version
    assert answer["id"] == "triton-1"
    assert answer["parameters"]["transformation_version"] == {
        "string_param": trained.transformation_version
    }

    served = service.metadata()
    assert served["version"] == version
    assert served["run_id"] == run_id
    assert served["transformation_version"] == trained.transformation_version
    assert served["source"] == "mlflow"


def test_services_run_on_uvloop_with_one_onnx_thread_large_buffers_and_the_legacy_listener(
    services: dict[str, ServiceProcess],
) -> None:
    for service in services.values():
        runtime = service.wait_for_log("server.runtime")
        assert runtime["event_loop"] == "uvloop"
        assert runtime["onnx_threads"] == 1
        assert runtime["large_buffers_from_heap"] is True
        assert runtime["grpc_experiments"] == "-event_engine_listener"


def test_standard_health_checks_and_reflection(services: dict[str, ServiceProcess]) -> None:
    service = services["lda"]
    for name in ("", service.name, "inference.GRPCInferenceService"):
        assert service.health(name) == "SERVING"
    assert service.health("no.such.Service") == "error: NOT_FOUND"
    with service.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    listed = {s.name for s in answer.list_services_response.service}
    assert {
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_malformed_requests_get_documented_codes_and_the_process_stays_up(
    case: Case,
    services: dict[str, ServiceProcess],
    models: dict[str, Trained],
) -> None:
    service, trained = services["dtc"], models["dtc"]
    target = Target(
        service.name,
        service.metadata()["version"],
        trained.transformation_version,
        trained.train.shape[1],
        1_200,
    )
    with service.channel() as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None,
            response_deserializer=None,
        )
        built = case.build(target)
        with pytest.raises(grpc.RpcError) as refused:
            call(built if isinstance(built, bytes) else built.SerializeToString(), timeout=10)
        error: Any = refused.value
        assert (error.code(), case.message in error.details()) == (case.code, True), error.details()
        ok = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(target.valid(), timeout=10)
    assert ok.model_name == service.name
    assert service.process.poll() is None


def test_a_message_over_the_size_limit_is_refused_by_grpc(
    services: dict[str, ServiceProcess], models: dict[str, Trained]
) -> None:
    service, trained = services["dtc"], models["dtc"]
    rows = np.full(
        (MAX_MESSAGE_BYTES // (8 * trained.train.shape[1]) + 10, trained.train.shape[1]), 0.5
    )
    request = inference.infer_request(service.name, rows, trained.transformation_version)
    with service.channel() as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    error: Any = refused.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert service.process.poll() is None
    assert service.health() == "SERVING"


def test_metrics_count_requests_by_version_and_status(
    services: dict[str, ServiceProcess], models: dict[str, Trained]
) -> None:
    service, trained = services["lda"], models["lda"]
    version = service.metadata()["version"]
    with service.channel() as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(
            inference.infer_request(service.name, trained.test[:3], trained.transformation_version)
        )
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(
                inference.infer_request(service.name, trained.test[:3], "tf-0000000000000000")
            )
    page = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", trust_env=False).text
    labels = f'model="{service.name}"'
    assert f"crimes_model_ready{{{labels}}} 1.0" in page
    assert f"crimes_model_registry_reachable{{{labels}}} 1.0" in page
    assert f"crimes_model_loaded{{{labels},run_id=" in page
    for status in ("OK", "FAILED_PRECONDITION"):
        assert (
            f'crimes_model_requests_total{{method="ModelInfer",{labels},status="{status}",'
            f'version="{version}"}}'
        ) in page
    assert 'crimes_model_request_seconds_bucket{le="0.0005",method="ModelInfer"' in page


def test_an_alias_move_is_picked_up_without_failing_a_request(
    services: dict[str, ServiceProcess],
    models: dict[str, Trained],
    names: dict[str, str],
    registered: dict[str, tuple[str, str]],
) -> None:
    service, first, second = services["dtc"], models["dtc"], models["dtc_v2"]
    assert first.transformation_version == second.transformation_version
    rows = first.test[:20]
    seen: list[tuple[str, list[str]]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with service.channel() as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            request = inference.infer_request(service.name, rows, first.transformation_version)
            while not stop.is_set():
                try:
                    answer = inference.decode_infer_response(stub.ModelInfer(request, timeout=10))
                except grpc.RpcError as error:
                    failures.append(str(error))
                    continue
                seen.append((answer.model_version, answer.labels))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        version, _ = register(second, names["dtc"])
        deadline = time.monotonic() + 60
        while service.metadata()["version"] != version:
            assert time.monotonic() < deadline, service.tail()
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    expected = {
        registered["dtc"][0]: _offline(names["dtc"], registered["dtc"][0], rows)[0],
        version: _offline(names["dtc"], version, rows)[0],
    }
    assert expected[version] != expected[registered["dtc"][0]]
    assert {v for v, _ in seen} == set(expected)
    assert all(labels == expected[v] for v, labels in seen)
    loaded = service.wait_for_log("model.serving", version=version)
    assert loaded["source"] == "mlflow"
    copy = bundles.load_bundle_dir(service.log.parent / "serving" / service.name / "last-good")
    assert copy.version == version
    # Structured logs only: one JSON object a line, MLflow's downloads included.
    lines = service.log.read_text().splitlines()
    assert [line for line in lines if not line.startswith("{")] == []


def test_a_version_that_fails_its_checks_leaves_the_old_one_serving(
    services: dict[str, ServiceProcess], models: dict[str, Trained], names: dict[str, str]
) -> None:
    service, trained = services["lda"], models["lda"]
    serving = service.metadata()["version"]
    broken, _ = register(
        trained, names["lda"], tags={"transformation_version": "tf-0000000000000000"}
    )
    failure = service.wait_for_log("model.load_failed", version=broken)
    assert "tf-0000000000000000" in failure["reason"]
    assert service.metadata()["version"] == serving
    assert service.health() == "SERVING"
    page = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", trust_env=False).text
    assert f'crimes_model_reloads_total{{model="{service.name}",outcome="failed"}} 1.0' in page
    move_alias(names["lda"], serving)


def test_a_version_whose_files_changed_in_the_store_is_refused_and_the_old_one_serves(
    services: dict[str, ServiceProcess],
    models: dict[str, Trained],
    names: dict[str, str],
    stack_settings: StackSettings,
) -> None:
    """Its model file rewritten in the object store (SeaweedFS, as MLflow keeps it) after it was
    registered: the service refuses to deserialise it, says why, counts it, serves on."""
    import mlflow

    service, trained = services["lda"], models["lda"]
    serving = service.metadata()["version"]
    failed_before = _reloads_failed(service)
    tampered, _ = register(trained, names["lda"], alias=None)
    # The version's ONNX form (what the services run) is a logged model (models:/m-...), whose
    # files MLflow keeps under .../models/m-.../artifacts/ in its bucket.
    tags = mlflow.MlflowClient().get_model_version(names["lda"], tampered).tags
    model_id = str(tags[Tag.ONNX_MODEL]).removeprefix("models:/")
    assert model_id.startswith("m-"), tags
    # Whoever holds MLflow's own keys to its bucket (the lake's writer has none there).
    store = s3_client(
        os.environ["MLFLOW_S3_ENDPOINT_URL"],
        stack_settings.mlflow_store_access_key,
        stack_settings.mlflow_store_secret_key,
    )
    keys = [
        item["Key"]
        for page in store.get_paginator("list_objects_v2").paginate(Bucket="mlflow")
        for item in page.get("Contents", [])
        if model_id in item["Key"] and item["Key"].endswith("model.onnx")
    ]
    assert len(keys) == 1, keys
    original = store.get_object(Bucket="mlflow", Key=keys[0])["Body"].read()
    store.put_object(Bucket="mlflow", Key=keys[0], Body=original + b"\x00")
    move_alias(names["lda"], tampered)
    failure = service.wait_for_log("model.load_failed", version=tampered)
    assert "SHA-256" in failure["reason"]
    assert "refused" in failure["reason"]
    assert service.metadata()["version"] == serving
    assert service.health() == "SERVING"
    assert _reloads_failed(service) == failed_before + 1
    move_alias(names["lda"], serving)


def test_a_version_without_its_onnx_form_is_refused_naming_the_command_that_adds_it(
    services: dict[str, ServiceProcess], models: dict[str, Trained], names: dict[str, str]
) -> None:
    """Registered before the services ran ONNX: refused, the old version serves on."""
    service = services["dtc"]
    serving = service.metadata()["version"]
    old, _ = register(models["dtc"], names["dtc"], alias=None, onnx_form=False)
    move_alias(names["dtc"], old)
    failure = service.wait_for_log("model.load_failed", version=old)
    assert f"crimes add-onnx {names['dtc']} {old}" in failure["reason"]
    assert service.metadata()["version"] == serving
    move_alias(names["dtc"], serving)


def _reloads_failed(service: ServiceProcess) -> float:
    page = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", trust_env=False).text
    found = re.search(
        rf'crimes_model_reloads_total\{{model="{service.name}",outcome="failed"\}} (\S+)', page
    )
    return float(found.group(1)) if found else 0.0


def test_with_mlflow_down_at_start_fallbacks_serve_then_the_registry_takes_over(
    stack_env: dict[str, str],
    models: dict[str, Trained],
    suffix: str,
    tmp_path: Path,
) -> None:
    dtc, dtc_v2, lda = models["dtc"], models["dtc_v2"], models["lda"]
    names = {
        "local": f"fallback_local_{suffix}",
        "lake": f"fallback_lake_{suffix}",
        "path": f"fallback_path_{suffix}",
        "none": f"fallback_none_{suffix}",
    }
    # What each service can fall back on: its last good copy (of the version the alias names
    # now: what it served before), the lake's bundle, a bundle folder.
    served_before, run_id = register(dtc, names["local"])
    bundles.save_bundle_dir(
        tmp_path / "local" / "serving" / names["local"] / "last-good",
        bundle(dtc, names["local"], served_before, run_id=run_id),
    )
    bundles.write_bundle(Lake(), bundle(lda, names["lake"], "5", run_id="lake-run"))
    bundles.save_bundle_dir(tmp_path / "given", bundle(dtc_v2, names["path"], "9"))
    mlflow = urlparse(stack_env["MLFLOW_TRACKING_URI"])
    with TcpProxy(str(mlflow.hostname), int(mlflow.port or 80)) as proxy:
        down = {
            **stack_env,
            "MLFLOW_TRACKING_URI": proxy.url,
            "CRIMES_MLFLOW_TRACKING_URI": proxy.url,
        }
        started = {
            "local": start_service("dtc", names["local"], down, tmp_path / "local"),
            "lake": start_service("lda", names["lake"], down, tmp_path / "lake"),
            "path": start_service(
                "dtc", names["path"], down, tmp_path / "path", bundle_path=tmp_path / "given"
            ),
            "none": start_service("dtc", names["none"], down, tmp_path / "none"),
        }
        try:
            expected = {
                "local": (served_before, "local_copy"),
                "lake": ("5", "lake"),
                "path": ("9", "bundle_path"),
            }
            for key, (version, source) in expected.items():
                started[key].wait_until("SERVING")
                served = started[key].metadata()
                assert (served["version"], served["source"]) == (version, source)
                assert started[key].wait_for_log("model.serving_fallback")["source"] == source
            assert started["lake"].metadata()["run_id"] == "lake-run"

            nothing = started["none"]
            nothing.wait_for_log("model.none_available")
            assert nothing.health() == "NOT_SERVING"
            with nothing.channel() as channel, pytest.raises(grpc.RpcError) as refused:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                    inference.infer_request(names["none"], dtc.test[:1], dtc.transformation_version)
                )
            error: Any = refused.value
            assert error.code() == grpc.StatusCode.UNAVAILABLE

            # MLflow comes back; the aliases move: every service follows the registry.
            version_local, _ = register(dtc_v2, names["local"])
            version_none, _ = register(lda, names["none"])
            assert started["local"].metadata()["version"] == served_before
            proxy.up()
            started["none"].wait_until("SERVING")
            for key, version in (("local", version_local), ("none", version_none)):
                deadline = time.monotonic() + 60
                while (served := started[key].metadata())["version"] != version:
                    assert time.monotonic() < deadline, started[key].tail()
                    time.sleep(0.1)
                assert served["source"] == "mlflow"
        finally:
            codes = [service.stop() for service in started.values()]
    assert codes == [0, 0, 0, 0]


def test_sigterm_lets_calls_in_flight_finish(
    stack_env: dict[str, str], models: dict[str, Trained], suffix: str, tmp_path: Path
) -> None:
    trained = models["lda"]
    name = f"drain_{suffix}"
    bundles.save_bundle_dir(tmp_path / "given", bundle(trained, name, "1"))
    service = start_service(
        "lda",
        name,
        {**stack_env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
        tmp_path,
        bundle_path=tmp_path / "given",
        use_lake_bundle="false",
        # Calls long enough to be in flight at SIGTERM: larger than the defaults take, so
        # fewer of them, within the same memory.
        max_message_bytes=8 * 1024 * 1024,
        max_batch_rows=10_000,
        max_concurrent_rpcs=4,
        request_memory_bytes=ModelServerSettings.memory_for(4, 8 * 1024 * 1024),
    )
    service.wait_until("SERVING")
    rows = np.vstack([trained.test] * 20)
    request = inference.infer_request(
        name, rows, trained.transformation_version, probabilities=True
    )
    outcomes: list[tuple[float, str]] = []
    stop = threading.Event()

    def client() -> None:
        with service.channel() as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    stub.ModelInfer(request, timeout=30)
                    outcomes.append((time.monotonic(), "OK"))
                except grpc.RpcError as error:
                    outcomes.append((time.monotonic(), error.code().name))
                    if error.code() == grpc.StatusCode.UNAVAILABLE:
                        return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    while len(outcomes) < 8:
        time.sleep(0.01)
    signalled = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    code = service.process.wait(timeout=30)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert code == 0
    assert time.monotonic() - signalled < 10
    # Calls racing the shutdown never reach a handler: gRPC refuses them (UNAVAILABLE, or
    # CANCELLED when it had already read them); none fails any other way.
    assert {status for _, status in outcomes} <= {"OK", "UNAVAILABLE", "CANCELLED"}
    assert any(status == "OK" and at > signalled for at, status in outcomes), (
        "no call in flight at SIGTERM finished"
    )
    events = [entry["event"] for entry in service.logs()]
    assert events.index("server.stopping") < events.index("server.stopped")
    assert "request.failed" not in events


_LOAD_FROM_MLFLOW = """
import json, sys
from crimes.serving.settings import ModelServerSettings
from crimes.serving.sources import MlflowRegistry
from crimes.serving.errors import ModelLoadError
settings = ModelServerSettings(name=sys.argv[1], port=0, metrics_port=0,
                               max_model_bytes=int(sys.argv[2]))
source = MlflowRegistry(settings)
ref = source.resolve()
try:
    loaded = source.load(ref)
    answer = {"version": loaded.bundle.version, "refused": None}
except ModelLoadError as error:
    answer = {"version": None, "refused": str(error)}
answer["clients"] = sorted(m for m in ("mlflow", "sklearn", "pandas", "boto3") if m in sys.modules)
print(json.dumps(answer))
"""


@pytest.mark.parametrize("max_model_bytes", [512 * 1024 * 1024, 4096])
def test_a_version_loads_from_mlflow_without_its_client_and_within_the_size_bound(
    stack_env: dict[str, str],
    registered: dict[str, tuple[str, str]],
    names: dict[str, str],
    max_model_bytes: int,
) -> None:
    """The alias and the version's files come over MLflow's REST API and artifact proxy: no
    MLflow client (nor scikit-learn, pandas, boto3) in the process; a version whose files are
    larger than the service's bound is refused, not downloaded whole."""
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_FROM_MLFLOW, names["dtc"], str(max_model_bytes)],
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["clients"] == []
    if max_model_bytes == 4096:
        assert answer["version"] is None
        assert "more than 4096 bytes" in answer["refused"]
    else:
        import mlflow

        champion = mlflow.MlflowClient().get_model_version_by_alias(names["dtc"], "champion")
        assert answer == {"version": str(champion.version), "refused": None, "clients": []}
