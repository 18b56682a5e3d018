"""The model services over gRPC (the core's `calls.ModelClient`): one channel per model
(round-robin over its replicas), its last known metadata, and calls with a deadline and safe
retries; gRPC's statuses become the core's outcomes here."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.resolver
import grpc
import numpy as np
from dns.exception import DNSException

from crimes.gateway.calls import ModelCallError, ServiceState
from crimes.ops import requests, tracing
from crimes.ops.logs import get_logger
from crimes.ops.tls import ClientTls
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.proto_gen.inference import grpc_service_pb2_grpc as pb_grpc
from crimes.protocol import inference
from crimes.protocol.outcomes import Outcome, from_grpc_status_name

log = get_logger(__name__)

# Retried: UNAVAILABLE (no connection, replica gone) and CANCELLED as an AioRpcError, which only
# the other side sends (a replica that stops cancels its calls); the gateway's own cancellations
# (its shutdown, a client gone) raise asyncio.CancelledError instead and are never retried. Both
# leave nothing running on the replica; a DEADLINE_EXCEEDED call may still run, and a retry
# would double it.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
# A retry waits this long times its number: a replica that is leaving (GOAWAY, then its socket
# closes) stays in the channel's picker for a moment, and a retry sent at once can meet it
# again (seen as a lost answer while a replica left under load).
RETRY_BACKOFF_SECONDS = 0.025
# The backoff of the refreshes that failed calls ask for (seconds).
REFRESH_BACKOFF_MIN = 0.2
REFRESH_BACKOFF_MAX = 5.0
# Refreshes in a row that may time out before a ready service is taken for not ready.
LATE_REFRESHES_KEPT = 2


def channel_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Re-resolve promptly when a replica disappears (scaling down, a crash).
        ("grpc.dns_min_time_between_resolutions_ms", 1_000),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.enable_retries", 0),
    ]


def open_channel(
    target: str,
    tls: ClientTls | None,
    options: list[tuple[str, Any]] | None = None,
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """A channel to a model service: TLS when the settings give a CA, plaintext otherwise."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(
        target,
        tls.credentials,
        options=[*(options or []), *tls.options()],
        interceptors=interceptors,
    )


def replicas(address: str) -> list[str]:
    """The host:port of every replica an address names now: DNS names resolve to all their IPs,
    through the DNS server the address names (`dns://10.0.0.10:53/dtc:50051`) or the host's."""
    if address.startswith(("ipv4:", "ipv6:")):
        return [part for part in address.split(":", 1)[1].split(",") if part]
    authority, target = "", address.removeprefix("dns:")
    if target.startswith("//"):
        authority, _, target = target[2:].partition("/")
    host, _, port = target.rpartition(":")
    try:
        found = _resolve(host, int(port), authority)
    except (OSError, ValueError, DNSException):
        return [target]
    return [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in found] or [target]


def _resolve(host: str, port: int, authority: str) -> list[str]:
    """The IP addresses of `host`, in the order given, once each."""
    if authority:
        resolver = dns.resolver.Resolver(configure=False)
        server, _, server_port = (
            authority.rpartition(":") if ":" in authority else (authority, "", "")
        )
        resolver.nameservers = [server or authority]
        resolver.port = int(server_port or 53)
        resolver.lifetime = 2.0
        answer = resolver.resolve(host, "A", search=False)
        return list(dict.fromkeys(str(record) for record in answer))
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in infos))


@dataclass
class ModelService:
    model_name: str
    address: str
    deadline_seconds: float
    retries: int
    state: ServiceState = field(default_factory=ServiceState)
    tls: ClientTls | None = None

    def __post_init__(self) -> None:
        self.channel = open_channel(
            self.address, self.tls, channel_options(), tracing.grpc_client_interceptors()
        )
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self._refreshing: asyncio.Task[ServiceState] | None = None
        # Refreshes asked for by failed calls: at most one per backoff, doubling while the
        # service stays unavailable (a burst of UNAVAILABLE answers is one refresh, not many).
        self._backoff = REFRESH_BACKOFF_MIN
        self._next_refresh_after = 0.0
        self._late = 0  # refreshes in a row that timed out while it was ready

    async def close(self) -> None:
        await self.channel.close(grace=None)

    async def refresh(self) -> ServiceState:
        """Ask the service (any replica) for its readiness and metadata; callers that ask while
        a refresh is in flight share it (single flight)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        return await asyncio.shield(self._refreshing)

    async def _refresh(self) -> ServiceState:
        fresh = await metadata_state(self.stub, self.model_name, self.deadline_seconds)
        if fresh.timed_out and self.state.ready and self._late < LATE_REFRESHES_KEPT:
            # A late answer is not a changed service: what it said last holds a while longer
            # (its calls still fail on their own if it is gone), so a stalled machine does not
            # fail the requests that come in until the next refresh.
            self._late += 1
            return self.state
        self._late = 0
        self.state = fresh
        if self.state.ready:
            self._backoff = REFRESH_BACKOFF_MIN
        return self.state

    def refresh_soon(self) -> None:
        """A call failed as UNAVAILABLE: refresh in the background, unless one runs or the
        backoff since the last such refresh has not passed."""
        now = time.monotonic()
        running = self._refreshing is not None and not self._refreshing.done()
        if running or now < self._next_refresh_after:
            return
        self._next_refresh_after = now + self._backoff
        self._backoff = min(self._backoff * 2, REFRESH_BACKOFF_MAX)
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh())

    async def infer(
        self,
        features: np.ndarray,
        transformation_version: str,
        probabilities: bool,
        request_ids: Sequence[str] = (),
        confidence: bool = False,
    ) -> inference.InferOutput:
        """The model's answer for the rows of `features`; `request_ids`: the gateway requests
        they belong to (one per record of a coalesced call), for the service's logs."""

        def request_for(label_index: bool) -> pb.ModelInferRequest:
            return inference.infer_request(
                self.model_name,
                features,
                transformation_version,
                probabilities=probabilities,
                confidence=confidence,
                request_id=",".join(request_ids),
                datatype=self.state.input_datatype,
                label_index=label_index,
            )

        response = await self._call(request_for, requests.metadata(request_ids))
        try:
            output = inference.decode_infer_response(response)
        except Exception as error:  # a malformed answer fails this model, not the request
            raise ModelCallError(Outcome.ERROR, f"unreadable answer: {error!r}") from error
        if len(output.labels) != len(features):
            # Never answers misaligned with their records: this model's call failed.
            raise ModelCallError(
                Outcome.ERROR,
                f"the model answered {len(output.labels)} rows for {len(features)}",
            )
        return output

    async def _call(
        self,
        request_for: Callable[[bool], pb.ModelInferRequest],
        metadata: Sequence[tuple[str, str]],
    ) -> pb.ModelInferResponse:
        """ModelInfer within the deadline, retried while that may help (see RETRYABLE)."""
        indexed = self.state.label_index
        request = request_for(indexed)
        deadline = time.monotonic() + self.deadline_seconds
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModelCallError(Outcome.TIMEOUT, "deadline exceeded")
            try:
                return await self.stub.ModelInfer(request, timeout=remaining, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                if indexed and _refused_label_index(error):
                    # A replica older than the metadata that was read (a rolling update):
                    # the labels themselves, from now until the next refresh says otherwise.
                    indexed = self.state.label_index = False
                    request = request_for(indexed)
                    continue
                if error.code() in RETRYABLE and attempt < self.retries:
                    attempt += 1
                    await asyncio.sleep(
                        min(RETRY_BACKOFF_SECONDS * attempt, (deadline - time.monotonic()) / 2)
                    )
                    continue
                raise ModelCallError(
                    from_grpc_status_name(error.code().name), error.details() or error.code().name
                ) from error


def _refused_label_index(error: grpc.aio.AioRpcError) -> bool:
    return error.code() == grpc.StatusCode.INVALID_ARGUMENT and (
        f"unknown output '{inference.LABEL_INDEX}'" in (error.details() or "")
    )


async def metadata_state(
    stub: pb_grpc.GRPCInferenceServiceAsyncStub, model_name: str, deadline_seconds: float
) -> ServiceState:
    try:
        ready = await stub.ModelReady(
            pb.ModelReadyRequest(name=model_name), timeout=deadline_seconds
        )
        metadata = await stub.ModelMetadata(
            pb.ModelMetadataRequest(name=model_name), timeout=deadline_seconds
        )
    except grpc.aio.AioRpcError as error:
        return ServiceState(
            ready=False,
            error=error.details() or error.code().name,
            timed_out=error.code() == grpc.StatusCode.DEADLINE_EXCEEDED,
        )
    info = inference.decode_model_metadata(metadata)
    return ServiceState(
        ready=bool(ready.ready),
        model_version=info.version or None,
        transformation_version=info.transformation_version or None,
        run_id=info.run_id or None,
        source=info.source or None,
        location=info.location or None,
        model_class=info.model_class or None,
        max_batch_rows=info.max_batch_rows or None,
        input_datatype=info.input_datatype,
        label_index=info.label_index,
    )


async def replica_states(service: ModelService) -> list[dict[str, Any]]:
    """Each replica's own state, through a short-lived channel to that replica alone."""

    async def one(target: str) -> dict[str, Any]:
        async with open_channel(target, service.tls) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            state = await metadata_state(stub, service.model_name, service.deadline_seconds)
        return {"address": target, **state.as_dict()}

    # Resolving may wait on a DNS server: never on the event loop.
    targets = await asyncio.to_thread(replicas, service.address)
    return list(await asyncio.gather(*(one(t) for t in targets)))
