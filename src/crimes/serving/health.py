"""The standard `grpc.health.v1` service and server reflection of a model service.

Health is reported for the whole server (""), for the served model's name and for the
inference service, all NOT_SERVING until a model is loaded: a standard probe
(`grpc_health_probe -service dtc_model_prod`, Kubernetes' gRPC probe) then tells readiness.
`liveness` is SERVING from the start until shutdown, model or not: a server waiting for the
first training (or a challenger deployment waiting for a challenger) is alive, not broken.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc.aio
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

HEALTH_SERVICE: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
LIVENESS: str = "liveness"


class Health:
    def __init__(self, services: Iterable[str]) -> None:
        self.services = ["", *services]
        # grpcio-health-checking's asyncio servicer (its stubs do not type it).
        self._servicer: Any = health_async.HealthServicer()

    async def register(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        await self._servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in self.services:
            await self._servicer.set(service, status)

    async def shutdown(self) -> None:
        """NOT_SERVING for good: probes stop routing here while in-flight calls finish."""
        await self._servicer.enter_graceful_shutdown()


def enable_reflection(server: grpc.aio.Server, services: Iterable[str]) -> None:
    reflection.enable_server_reflection([*services, reflection.SERVICE_NAME], server)
