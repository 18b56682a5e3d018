"""The generic model server: one registered model behind the Open Inference Protocol over gRPC.

A grpc.aio server with the inference service, the standard health service and reflection;
Prometheus metrics on their own HTTP port; the model lifecycle of `runtime`. SIGTERM stops it
gracefully: health turns NOT_SERVING, new calls are refused, calls in flight get
`grace_seconds` to finish.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any, Final, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from crimes.ops import requests, tracing
from crimes.ops.logs import get_logger
from crimes.ops.memory import keep_large_buffers
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.protocol import inference, records
from crimes.registry import CHAMPION
from crimes.serving.errors import InvalidInput, ModelNotFound, ModelUnavailable, status_code
from crimes.serving.health import Health, enable_reflection
from crimes.serving.metadata import model_info
from crimes.serving.metrics import Metrics
from crimes.serving.model import LoadedModel
from crimes.serving.runtime import ModelRuntime
from crimes.serving.settings import ModelServerSettings
from crimes.serving.sources import Fallback, MlflowRegistry, Registry, configure_mlflow_client
from crimes.serving.sources import fallbacks as default_fallbacks

log = get_logger("crimes.serving")

SERVICE: Final = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVER_NAME: Final = "crimes-model-server"

Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)


def _package_version() -> str:
    try:
        return metadata.version("chicago-crimes")
    except metadata.PackageNotFoundError:
        return "unknown"


class _Call:
    """What a handler learns while answering, for the metrics (the version that answered)."""

    __slots__ = ("version",)

    def __init__(self) -> None:
        self.version = ""


Handler = Callable[[Any, _Call], Awaitable[Message]]


class InferenceService:
    """The GRPCInferenceService methods over one model runtime."""

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
        self.log = log.bind(model=settings.name)
        self._server_metadata = pb.ServerMetadataResponse(
            name=SERVER_NAME, version=_package_version(), extensions=[]
        )

    def generic_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods: dict[str, tuple[Handler, type[Message]]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": (self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": (self.model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": (self.model_infer, pb.ModelInferRequest),
        }
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    self._behaviour(name, handler, request_type),
                    response_serializer=_serialize,
                )
                for name, (handler, request_type) in methods.items()
            },
        )

    def _behaviour(
        self, method: str, handler: Handler, request_type: type[Message]
    ) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]:
        metrics = self.metrics
        parse = request_type.FromString

        async def behaviour(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            started = time.perf_counter()
            call = _Call()
            # The gateway requests this call serves, in every log line written for it (each
            # RPC runs in a task of its own: the id never leaks into another call's lines).
            request_ids = requests.from_metadata(context.invocation_metadata())
            if request_ids:
                requests.current.set(request_ids)
            try:
                # Parsed here, not by gRPC, so that bytes that are no such message are the
                # client's error (INVALID_ARGUMENT), not the server's (gRPC would say INTERNAL).
                try:
                    request = parse(data)
                except DecodeError as error:
                    raise InvalidInput(
                        f"the request is not a valid {request_type.DESCRIPTOR.name}: {error}"
                    ) from error
                response = await handler(request, call)
            except Exception as error:
                code = status_code(error)
                if code is grpc.StatusCode.INTERNAL:
                    self.log.exception("request.failed", method=method)
                    message = f"internal error ({type(error).__name__}); see the server's logs"
                else:
                    self.log.info(
                        "request.refused", method=method, status=code.name, reason=str(error)
                    )
                    message = str(error)
                metrics.observe(method, call.version, code.name, time.perf_counter() - started)
                await context.abort(code, message)
            elapsed = time.perf_counter() - started
            metrics.observe(method, call.version, "OK", elapsed)
            # The access log: at debug level (CRIMES_LOG_LEVEL=DEBUG), free when off.
            self.log.debug(
                "request.served", method=method, version=call.version, ms=round(elapsed * 1e3, 3)
            )
            return response

        return behaviour

    def _model(self, name: str, version: str, call: _Call) -> LoadedModel:
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

    async def server_live(self, request: pb.ServerLiveRequest, call: _Call) -> Message:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, call: _Call) -> Message:
        return pb.ServerReadyResponse(ready=self.runtime.ready)

    async def model_ready(self, request: pb.ModelReadyRequest, call: _Call) -> Message:
        model = self.runtime.current
        ready = (
            model is not None
            and request.name == model.name
            and request.version in ("", model.version)
        )
        return pb.ModelReadyResponse(ready=ready)

    async def server_metadata(self, request: pb.ServerMetadataRequest, call: _Call) -> Message:
        return self._server_metadata

    async def model_metadata(self, request: pb.ModelMetadataRequest, call: _Call) -> Message:
        model = self._model(request.name, request.version, call)
        return inference.encode_model_metadata(model_info(model, self.settings.max_batch_rows))

    async def model_infer(self, request: pb.ModelInferRequest, call: _Call) -> Message:
        model = self._model(request.model_name, request.model_version, call)
        decoded: inference.Requested
        features: inference.Features
        if records.is_record_request(request):
            # Raw records: validated by the contract, transformed by this version's own
            # transformation (the transformation_version parameter does not apply).
            raw = records.decode(request, self.settings.max_batch_rows)
            features, unknown = model.transform_records(raw.columns, raw.rows)
            self.metrics.unknown(unknown)
            decoded = raw
        else:
            matrix = inference.decode_infer_request(request, self.settings.max_batch_rows)
            model.check_features(matrix.features, matrix.transformation_version)
            features, decoded = matrix.features, matrix
        if request.id and not requests.current.get():
            # A client's own id (the protocol's request id), when no gateway sent one.
            client_id = requests.accepted(request.id)
            if client_id == request.id:
                requests.current.set(client_id)
        probabilities = inference.PROBABILITIES in decoded.outputs
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


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def grpc_options(settings: ModelServerSettings) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(settings.min_client_ping_interval_seconds * 1000),
        ),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_seconds * 1000)),
        # A port already taken must fail loudly, not be silently shared with another server.
        ("grpc.so_reuseport", 0),
    ]


class ModelServer:
    """One model service in this process: start() binds and serves, stop() drains."""

    def __init__(
        self,
        settings: ModelServerSettings,
        registry: Registry | None = None,
        fallback_chain: list[Fallback] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics(settings.name)
        self.health = Health([settings.name, SERVICE])
        self.runtime = ModelRuntime(
            settings,
            registry if registry is not None else MlflowRegistry(settings),
            fallback_chain if fallback_chain is not None else default_fallbacks(settings),
            self.metrics,
            on_change=self._on_model_change,
            on_unload=self._on_model_unload,
        )
        self.executor = ThreadPoolExecutor(
            max_workers=settings.predict_threads,
            thread_name_prefix="predict",
        )
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.metrics_port = 0
        self._metrics_http: Any = None
        self._tasks: list[asyncio.Task[Any]] = []

    async def _on_model_unload(self) -> None:
        await self.health.set_serving(False)

    async def _on_model_change(self, model: LoadedModel) -> None:
        await self.health.set_serving(True)

    async def start(self) -> None:
        # A grpc.aio server belongs to the event loop it is made on: made here, not in __init__.
        server = grpc.aio.server(
            interceptors=tracing.grpc_server_interceptors(),
            options=grpc_options(self.settings),
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
        )
        self.server = server
        service = InferenceService(self.settings, self.runtime, self.metrics, self.executor)
        server.add_generic_rpc_handlers([service.generic_handler()])
        await self.health.register(server)
        enable_reflection(server, [SERVICE, "grpc.health.v1.Health"])
        await self.health.set_serving(False)
        address = f"{self.settings.host}:{self.settings.port}"
        server_tls = self.settings.tls
        if server_tls is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, server_tls.credentials("CRIMES_MODEL_"))
        if self.port == 0:
            raise RuntimeError(f"could not listen on {address}")
        await server.start()
        self._metrics_http, self.metrics_port = self.metrics.serve_http(
            self.settings.host, self.settings.metrics_port
        )
        log.info(
            "server.started",
            model=self.settings.name,
            alias=self.settings.alias,
            host=self.settings.host,
            port=self.port,
            tls="mutual" if self.settings.tls_client_ca_file else bool(server_tls),
            metrics_port=self.metrics_port,
            tracking_uri=self.settings.tracking_uri,
        )
        # Serving starts before the model is loaded: liveness answers at once, readiness and
        # health turn true when a model is in place.
        self._tasks.append(asyncio.create_task(self._lifecycle(), name="model-lifecycle"))

    async def _lifecycle(self) -> None:
        await self.runtime.start()
        await self.runtime.watch()

    async def stop(self) -> None:
        log.info(
            "server.stopping", model=self.settings.name, grace_seconds=self.settings.grace_seconds
        )
        await self.health.shutdown()
        for task in self._tasks:
            task.cancel()
        if self.server is not None:
            await self.server.stop(self.settings.grace_seconds)
        self.executor.shutdown(wait=True)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        log.info("server.stopped", model=self.settings.name)


async def serve(settings: ModelServerSettings) -> None:
    """Run one model service until SIGTERM or SIGINT."""
    server = ModelServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    await server.stop()


def run(settings: ModelServerSettings, *, grpc_experiments_applied: bool = False) -> None:
    configure_mlflow_client(settings)
    # A challenger deployment's traces are its own: crimes-model-<name>-challenger.
    suffix = "" if settings.alias == CHAMPION else f"-{settings.alias}"
    tracing.configure(f"crimes-model-{settings.name}{suffix}")
    log.info(
        "server.runtime",
        event_loop=settings.event_loop,
        onnx_threads=settings.onnx_threads,
        large_buffers_from_heap=keep_large_buffers(),
        grpc_experiments=settings.grpc_experiments if grpc_experiments_applied else None,
    )
    try:
        if settings.event_loop == "uvloop":
            import uvloop

            uvloop.run(serve(settings))
        else:
            asyncio.run(serve(settings))
    finally:
        tracing.shutdown()
