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
from typing import Any, Final

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

from crimes.ops import requests, tracing
from crimes.ops.logs import get_logger
from crimes.ops.memory import keep_large_buffers
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.protocol.outcomes import Outcome, grpc_status_name
from crimes.registry import CHAMPION
from crimes.serving.dataplane import Call, DataPlane
from crimes.serving.errors import InvalidInput, outcome_of
from crimes.serving.health import Health, enable_reflection
from crimes.serving.metrics import Metrics
from crimes.serving.model import LoadedModel
from crimes.serving.runtime import ModelRuntime
from crimes.serving.settings import ModelServerSettings
from crimes.serving.sources import Fallback, MlflowRegistry, Registry
from crimes.serving.sources import fallbacks as default_fallbacks

log = get_logger("crimes.serving")

SERVICE: Final = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

Handler = Callable[[Any, Call], Awaitable[Message]]


class GrpcInferenceService:
    """The GRPCInferenceService over gRPC: each method parses its request, calls the data
    plane, and maps what it raises to a status (`errors.outcome_of`, `protocol.outcomes`)."""

    def __init__(self, plane: DataPlane, metrics: Metrics, model_name: str) -> None:
        self.plane = plane
        self.metrics = metrics
        self.log = log.bind(model=model_name)

    def generic_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        plane = self.plane
        methods: dict[str, tuple[Handler, type[Message]]] = {
            "ServerLive": (plane.server_live, pb.ServerLiveRequest),
            "ServerReady": (plane.server_ready, pb.ServerReadyRequest),
            "ModelReady": (plane.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": (plane.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": (plane.model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": (plane.model_infer, pb.ModelInferRequest),
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
            call = Call()
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
                code, message = self._refusal(method, error)
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

    def _refusal(self, method: str, error: Exception) -> tuple[grpc.StatusCode, str]:
        """The status and message a client gets for an error its request raised."""
        outcome = outcome_of(error)
        code = grpc.StatusCode[grpc_status_name(outcome)]
        if outcome is Outcome.ERROR:
            self.log.exception("request.failed", method=method)
            return code, f"internal error ({type(error).__name__}); see the server's logs"
        self.log.info("request.refused", method=method, status=code.name, reason=str(error))
        return code, str(error)


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
        plane = DataPlane(self.settings, self.runtime, self.metrics, self.executor)
        service = GrpcInferenceService(plane, self.metrics, self.settings.name)
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
