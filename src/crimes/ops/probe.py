"""Health probes a container runs against its own service: the standard gRPC health check, and
an HTTP GET. Exit status 0 means healthy (what Docker and Kubernetes expect of a probe)."""

from __future__ import annotations

from crimes.ops.tls import ClientTls


def grpc_serving(
    address: str, service: str = "", timeout: float = 3.0, tls: ClientTls | None = None
) -> tuple[bool, str]:
    """Whether `grpc.health.v1.Health/Check` says SERVING for `service` at `address`."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = (
        grpc.insecure_channel(address)
        if tls is None
        else grpc.secure_channel(address, tls.credentials, options=tls.options())
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            return False, f"{error.code().name}: {error.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return answer.status == health_pb2.HealthCheckResponse.SERVING, status


def http_ok(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    import httpx

    try:
        response = httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.HTTPError as error:
        return False, str(error)
    return response.status_code == 200, f"HTTP {response.status_code}"
