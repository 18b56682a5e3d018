"""The model service's data plane, transport-free: what to do with a decoded Open Inference
Protocol request (the protocol's messages are its values), against the model the runtime
serves now. It knows nothing of gRPC: `server` carries its calls, and maps what it raises to
a status once (`errors.outcome_of`)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Final

from google.protobuf.message import Message

from crimes.ops import requests, tracing
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.protocol import inference, records
from crimes.serving.errors import InvalidInput, ModelNotFound, ModelUnavailable
from crimes.serving.metadata import model_info
from crimes.serving.metrics import Metrics
from crimes.serving.model import LoadedModel
from crimes.serving.runtime import ModelRuntime
from crimes.serving.settings import ModelServerSettings

SERVER_NAME: Final = "crimes-model-server"


def _package_version() -> str:
    try:
        return metadata.version("chicago-crimes")
    except metadata.PackageNotFoundError:
        return "unknown"


class Call:
    """What a handler learns while answering, for the metrics (the version that answered)."""

    __slots__ = ("version",)

    def __init__(self) -> None:
        self.version = ""


class DataPlane:
    """The protocol's methods over one model runtime."""

    def __init__(
        self,
        settings: ModelServerSettings,
        runtime: ModelRuntime,
        metrics: Metrics,
        executor: ThreadPoolExecutor,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.metrics = metrics
        self.executor = executor
        self._server_metadata = pb.ServerMetadataResponse(
            name=SERVER_NAME, version=_package_version(), extensions=[]
        )

    def _model(self, name: str, version: str, call: Call) -> LoadedModel:
        """The model a request addresses, or the error that says why it cannot be served."""
        model = self.runtime.current
        if model is None:
            raise ModelUnavailable(
                f"model {self.settings.name} is not loaded yet (readiness is false); retry later"
            )
        call.version = model.version
        if not name:
            raise InvalidInput(f"the model name is empty: this server serves '{model.name}'")
        if name != model.name:
            raise ModelNotFound(f"unknown model '{name}': this server serves '{model.name}'")
        if version and version != model.version:
            raise ModelNotFound(
                f"model {model.name} version {version} is not served: version "
                f"{model.version} is (leave the version empty for the served one)"
            )
        return model

    async def server_live(self, request: pb.ServerLiveRequest, call: Call) -> Message:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, call: Call) -> Message:
        return pb.ServerReadyResponse(ready=self.runtime.ready)

    async def model_ready(self, request: pb.ModelReadyRequest, call: Call) -> Message:
        model = self.runtime.current
        ready = (
            model is not None
            and request.name == model.name
            and request.version in ("", model.version)
        )
        return pb.ModelReadyResponse(ready=ready)

    async def server_metadata(self, request: pb.ServerMetadataRequest, call: Call) -> Message:
        return self._server_metadata

    async def model_metadata(self, request: pb.ModelMetadataRequest, call: Call) -> Message:
        model = self._model(request.name, request.version, call)
        return inference.encode_model_metadata(model_info(model, self.settings.max_batch_rows))

    async def model_infer(self, request: pb.ModelInferRequest, call: Call) -> Message:
        model = self._model(request.model_name, request.model_version, call)
        decoded = inference.decode_request(request, self.settings.max_batch_rows)
        features = self._features(model, decoded)
        if request.id and not requests.current.get():
            # A client's own id (the protocol's request id), when no gateway sent one.
            client_id = requests.accepted(request.id)
            if client_id == request.id:
                requests.current.set(client_id)
        probabilities = bool(
            {inference.PROBABILITIES, inference.CONFIDENCE}.intersection(decoded.outputs)
        )
        with tracing.span("predict", rows=len(features), version=model.version):
            if len(features) <= self.settings.inline_rows:
                prediction = model.predict(features, probabilities)
            else:
                prediction = await asyncio.get_running_loop().run_in_executor(
                    self.executor, model.predict, features, probabilities
                )
        answer = inference.Answer(
            model_name=model.name,
            model_version=model.version,
            transformation_version=model.transformation_version,
            labels=prediction.labels,
            probabilities=prediction.probabilities,
            encoding=model.labels,
        )
        return inference.encode_infer_response(request, decoded, answer)

    def _features(
        self, model: LoadedModel, decoded: inference.InferInput | records.RecordsInput
    ) -> inference.Features:
        """What the model predicts on: raw records validated by the contract and transformed
        by this version's own transformation (the transformation_version parameter does not
        apply to them), or a matrix checked against the model."""
        if isinstance(decoded, records.RecordsInput):
            features, unknown = model.transform_records(decoded.columns, decoded.rows)
            self.metrics.unknown(unknown)
            return features
        model.check_features(decoded.features, decoded.transformation_version)
        return decoded.features
