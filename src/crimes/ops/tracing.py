"""OpenTelemetry traces, on only when an OTLP endpoint is set.

The SDK's own settings decide (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_EXPORTER_OTLP_ENDPOINT`, OTLP over HTTP/protobuf; `OTEL_SERVICE_NAME`; `OTEL_BSP_*` for
batching; `OTEL_SDK_DISABLED=true` turns it off). With no endpoint nothing is installed: no
middleware, no interceptor, no span objects on the request path, so tracing costs nothing when
it is off. The gateway makes a span per request (FastAPI instrumentation), one for the
transformation and a client span per model call (gRPC instrumentation); each model service a
server span per call, the child of the gateway's call through the W3C `traceparent` metadata.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Final

from opentelemetry import trace

from crimes.ops.logs import get_logger

log = get_logger(__name__)

ENDPOINT_VARIABLES: Final = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

_provider: Any = None


def endpoint() -> str:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    return next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), "")


def configure(service_name: str, exporter: Any = None) -> bool:
    """Install the SDK's tracer provider for this process when an endpoint is set (or an
    exporter is given: the tests' in-memory one); whether traces are on."""
    global _provider
    if _provider is not None:
        return True
    if exporter is None:
        if not endpoint():
            return False
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # reads the OTEL_EXPORTER_OTLP_* settings
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    # Spans leave in batches from a thread of their own, never on the request path.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info("tracing.on", service=name, endpoint=endpoint() or type(exporter).__name__)
    return True


def enabled() -> bool:
    return _provider is not None


def shutdown() -> None:
    """Send the spans still queued (at a process's graceful stop)."""
    if _provider is not None:
        _provider.shutdown()


# Only the calls that carry predictions make spans: the gateway's readiness polls (ModelReady,
# ModelMetadata every few seconds) and health checks would be a root trace each, all noise.
TRACED_METHOD: Final = "ModelInfer"


def grpc_client_interceptors() -> list[Any] | None:
    """A client span per traced call, its context sent as `traceparent` metadata."""
    if _provider is None:
        return None
    from opentelemetry.instrumentation.grpc import aio_client_interceptors, filters

    return aio_client_interceptors(filter_=filters.method_name(TRACED_METHOD))  # type: ignore[no-any-return,no-untyped-call]


def grpc_server_interceptors() -> list[Any] | None:
    """A server span per traced call, the child of the caller's span (`traceparent`)."""
    if _provider is None:
        return None
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    return [aio_server_interceptor(filter_=filters.method_name(TRACED_METHOD))]  # type: ignore[no-untyped-call]


def annotate(**attributes: Any) -> None:
    """Attributes on the current span (the request's, in the gateway) when traces are on."""
    if _provider is not None:
        trace.get_current_span().set_attributes(attributes)


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A child span of the current one when traces are on; nothing at all when off."""
    if _provider is None:
        yield
        return
    with trace.get_tracer("crimes").start_as_current_span(name, attributes=attributes):
        yield
