"""Model services as real processes (`crimes serve dtc|lda`) on free ports, and registering
models in a real MLflow server the way the training does."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crimes import registry
from crimes.local import launch
from crimes.local.launch import LocalProcess
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.proto_gen.inference import grpc_service_pb2_grpc as pb_grpc
from crimes.protocol import inference
from crimes.registry import Tag, artifacts
from crimes.training import onnx_export
from tests.serving.models import Trained


@dataclass
class ServiceProcess(LocalProcess):
    """A model service process, seen through the protocol: health, readiness, metadata."""

    name: str = ""

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def health(self, service: str | None = None) -> str:
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                answer = stub.Check(
                    health_pb2.HealthCheckRequest(
                        service=self.name if service is None else service
                    ),
                    timeout=2,
                )
            except grpc.RpcError as error:
                return f"error: {error.code().name}"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))

    def wait_until(self, status: str, timeout: float = 90.0) -> None:
        """Wait for the model's health status (never a fixed sleep: the probe decides)."""
        deadline = time.monotonic() + timeout
        while (current := self.health()) != status:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited {self.process.returncode}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} is {current}, not {status}:\n{self.tail()}")
            time.sleep(0.1)

    def metadata(self) -> dict[str, Any]:
        with self.channel() as channel:
            answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
                pb.ModelMetadataRequest(name=self.name), timeout=5
            )
        return {"version": answer.versions[0], **inference.parameters_dict(answer.parameters)}


def start_service(
    deployment: str, name: str, env: dict[str, str], folder: Path, **settings: Any
) -> ServiceProcess:
    """`crimes serve <deployment>` for the registered model `name`, with CRIMES_MODEL_* settings."""
    service_env = {
        **env,
        "CRIMES_MODEL_NAME": name,
        "CRIMES_MODEL_LOCAL_DIR": str(folder / "serving"),
        "CRIMES_MODEL_POLL_INTERVAL_SECONDS": "0.3",
        "CRIMES_MODEL_GRACE_SECONDS": "5",
        **{f"CRIMES_MODEL_{key.upper()}": str(value) for key, value in settings.items()},
    }
    return launch.serve(ServiceProcess, deployment, service_env, folder, name=name)


def register(
    trained: Trained,
    name: str,
    *,
    alias: str | None = registry.CHAMPION,
    tags: dict[str, str] | None = None,
    onnx_form: bool = True,
) -> tuple[str, str]:
    """Log and register a model the way the training does (without its ONNX form: as
    before the services ran ONNX); its (version, run id)."""
    import mlflow
    from mlflow.models import infer_signature

    client = mlflow.MlflowClient()
    mlflow.set_experiment("model-service-tests")
    with mlflow.start_run() as run:
        mlflow.log_text(trained.transformation.data.decode(), registry.TRANSFORMATION_ARTIFACT)
        sample = trained.train.head(20)
        info = mlflow.sklearn.log_model(
            trained.model,
            name="model",
            signature=infer_signature(sample, trained.model.predict(sample.to_numpy())),
            pip_requirements=["scikit-learn", "numpy", "skops"],
            registered_model_name=name,
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
        version = str(info.registered_model_version)
        # As the training does: the files' SHA-256, which a model service checks before
        # loading, and the ONNX form the services run.
        artifacts.record_model_sha256(mlflow.get_tracking_uri(), name, version)
        if onnx_form:
            onnx_export.attach(name, version, trained.model, trained.test, trained.transformation)
    for key, value in {
        Tag.TRANSFORMATION_VERSION: trained.transformation_version,
        Tag.DATASET: "synthetic-test",
        **(tags or {}),
    }.items():
        client.set_model_version_tag(name, version, key, value)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version, run.info.run_id


def move_alias(name: str, version: str, alias: str = registry.CHAMPION) -> None:
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
