"""An in-process model server on a free port with a registry double, and its clients.

The server is the real one (grpc.aio, health, reflection, metrics); only MLflow is replaced,
by `FakeRegistry`, whose alias, reachability and loads the tests control.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crimes.proto_gen.inference import grpc_service_pb2_grpc as pb_grpc
from crimes.registry.bundles import ModelBundle
from crimes.serving.errors import ModelLoadError
from crimes.serving.model import LoadedModel, Source, prepare
from crimes.serving.server import ModelServer
from crimes.serving.settings import ModelServerSettings, load_settings
from crimes.serving.sources import Fallback, RegistryError, VersionRef

NAME = "test_model"


class FakeRegistry:
    """The registry double: versions by number, an alias, reachability, an optional gate."""

    def __init__(self, name: str = NAME) -> None:
        self.name = name
        self.versions: dict[str, ModelBundle | Exception] = {}
        self.alias_version: str | None = None
        self.reachable = True
        self.loads: list[str] = []
        # When set, a load waits for it: the tests hold a load half-way to watch the swap.
        self.gate: threading.Event | None = None

    def publish(self, version: str, bundle: ModelBundle | Exception, *, alias: bool = True) -> None:
        self.versions[version] = bundle
        if alias:
            self.alias_version = version

    def resolve(self) -> VersionRef:
        if not self.reachable:
            raise RegistryError("connection refused (fake registry is down)", reachable=False)
        if self.alias_version is None:
            raise RegistryError(f"models:/{self.name}@champion does not exist", reachable=True)
        return VersionRef(
            self.name, self.alias_version, f"run-{self.alias_version}", "champion", {}
        )

    def load(self, ref: VersionRef) -> LoadedModel:
        self.loads.append(ref.version)
        if self.gate is not None:
            self.gate.wait(timeout=30)
        found = self.versions[ref.version]
        if isinstance(found, Exception):
            raise ModelLoadError(f"models:/{ref.name}/{ref.version}: {found}")
        return prepare(found, Source.MLFLOW, f"models:/{ref.name}/{ref.version}", alias=ref.alias)


def settings(tmp_path: Path, **overrides: Any) -> ModelServerSettings:
    values: dict[str, Any] = {
        "name": NAME,
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "local_dir": tmp_path / "serving",
        "use_lake_bundle": False,
        "poll_interval_seconds": 0.05,
        "retry_failed_after_seconds": 60.0,
        "grace_seconds": 2.0,
        **overrides,
    }
    return load_settings(None, **values)


@dataclass
class Running:
    server: ModelServer
    channel: grpc.aio.Channel
    stub: pb_grpc.GRPCInferenceServiceAsyncStub

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    async def health(self, service: str = "") -> str:
        stub = health_pb2_grpc.HealthStub(self.channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


@contextlib.asynccontextmanager
async def running(
    config: ModelServerSettings,
    registry: FakeRegistry,
    fallbacks: list[Fallback] | None = None,
) -> AsyncIterator[Running]:
    server = ModelServer(config, registry=registry, fallback_chain=fallbacks or [])
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Running(server, channel, pb_grpc.GRPCInferenceServiceStub(channel))
    finally:
        await channel.close(None)
        await server.stop()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition the server reaches by itself (a load, a swap), polling briefly."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(0.01)


class ServerThread:
    """A model server on its own event loop in a background thread, for synchronous clients.

    Lets many tests share one server (a module-scoped fixture) and call it with the blocking
    gRPC API, as most clients do.
    """

    def __init__(
        self, config: ModelServerSettings, registry: FakeRegistry, fallbacks: list[Fallback]
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = ModelServer(config, registry=registry, fallback_chain=fallbacks)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.server.runtime.ready:
            if time.monotonic() > deadline:
                raise AssertionError("the server did not load its model")
            time.sleep(0.01)
