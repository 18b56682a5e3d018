"""Run the gateway under uvicorn (uvloop + httptools, no access log: logs are structured)."""

from __future__ import annotations

from crimes.gateway.settings import GatewaySettings
from crimes.ops import tracing
from crimes.ops.memory import keep_large_buffers


def run(settings: GatewaySettings) -> None:
    import uvicorn

    keep_large_buffers()
    tracing.configure("crimes-gateway")
    from crimes.gateway.app import create_app

    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
            # SIGTERM: stop accepting, let in-flight requests finish for this long.
            timeout_graceful_shutdown=10,
        )
    finally:
        tracing.shutdown()
