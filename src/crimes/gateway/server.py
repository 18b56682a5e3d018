"""Run the gateway under uvicorn (uvloop + httptools, no access log: logs are structured)."""

from __future__ import annotations

import gc

from crimes.gateway.settings import GatewaySettings
from crimes.ops import tracing
from crimes.ops.memory import keep_large_buffers


def run(settings: GatewaySettings) -> None:
    import uvicorn

    keep_large_buffers()
    tracing.configure("crimes-gateway")
    # What the gateway imports to fetch transformations (MLflow's client) is hundreds of
    # thousands of long-lived objects that every full garbage collection would walk again
    # (~0.1 s each, and a 1,000-record batch allocates enough to trigger collections).
    # Imported now and frozen, they are never scanned; requests' own garbage is collected as
    # before.
    import mlflow.artifacts  # noqa: F401

    from crimes.gateway.app import create_app
    from crimes.gateway.connections import HeaderTimedProtocol

    gc.freeze()

    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http=HeaderTimedProtocol.bounded(settings.header_timeout_seconds),
            access_log=False,
            log_level="warning",
            # SIGTERM: stop accepting, let in-flight requests finish for this long.
            timeout_graceful_shutdown=10,
        )
    finally:
        tracing.shutdown()
