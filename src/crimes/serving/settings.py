"""Settings of the generic model server, read from `CRIMES_MODEL_*` environment variables.

The two deployments differ only in these values; each deployment's own live in its folder
(`services/dtc/service.env`, `services/lda/service.env`). Anything set in the environment, or
passed explicitly, wins over the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crimes import registry
from crimes.ops import tls
from crimes.registry import signing
from crimes.settings import DEFAULT_STATE_DIR, DEFAULT_TRACKING_URI, deployment_file

MIB = 1024 * 1024
# What a call may hold at once, in multiples of its message: measured at the limit (4 calls of
# 4 MiB: peak RSS +87 to +142 MiB, up to about 9x, the allocator keeping freed buffers;
# tests/security/test_model_limits_e2e.py), with a margin.
COPIES_PER_CALL = 12


class ModelServerSettings(BaseSettings):
    """One model service: which registered model it serves, where, and how it behaves."""

    model_config = SettingsConfigDict(
        env_prefix="CRIMES_MODEL_", extra="ignore", validate_by_name=True
    )

    # The registered model served, and the alias followed.
    name: str = Field(min_length=1)
    alias: str = Field(default=registry.CHAMPION, min_length=1)

    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    # Prometheus metrics over HTTP on their own port (0: any free port, logged at start).
    metrics_port: int = Field(ge=0, le=65535)

    tracking_uri: str = Field(
        default=DEFAULT_TRACKING_URI,
        validation_alias=AliasChoices(
            "CRIMES_MODEL_TRACKING_URI", "CRIMES_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"
        ),
    )
    # How often the alias is checked; it is never checked per request.
    poll_interval_seconds: float = Field(default=5.0, gt=0)
    # A version that failed to load is not retried before this long (unless the alias moves).
    retry_failed_after_seconds: float = Field(default=60.0, ge=0)
    # Each MLflow HTTP call: a short timeout and few retries, so an unreachable server costs
    # seconds at start (then the fallbacks serve) instead of MLflow's default minutes of backoff.
    mlflow_timeout_seconds: float = Field(default=5.0, gt=0)
    mlflow_max_retries: int = Field(default=1, ge=0, le=10)
    # A version's files (its ONNX form and transformation) above this size are refused, not
    # downloaded: a registry entry cannot fill a replica's disk or memory.
    max_model_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    # The training's public key (registry.signing; base64): set, a version loads only if the
    # training signed its form's digest, so a registry writer cannot register a form alone.
    verify_key: str | None = None

    # The last good model is kept here, under the registered model's name.
    local_dir: Path = DEFAULT_STATE_DIR / "serving"
    # Fallbacks when MLflow is unreachable at start, in order after the local copy.
    use_lake_bundle: bool = True
    bundle_path: Path | None = None

    # Inputs: batches above this many rows are refused; a request's message-size limit (1,200
    # rows of 299 FP64 features are 2.7 MiB; the gateway sends at most 1,000 per call).
    max_batch_rows: int = Field(default=1_200, ge=1)
    max_message_bytes: int = Field(default=3 * MIB, ge=1024)
    # The memory requests in flight may take: every admitted call holding a message of the
    # largest size, with the copies a call makes of it (`memory_for`). The settings must agree
    # (the service refuses to start otherwise), and a deployment's memory limit holds this
    # plus the service itself (about 150 MB: tests/security/test_model_limits_e2e.py).
    request_memory_bytes: int = Field(default=864 * MIB, ge=1024)
    # Batches up to this many rows are predicted on the event loop (cheaper than a thread hop);
    # larger ones in a worker thread, so they do not stall the small ones.
    inline_rows: int = Field(default=64, ge=0)
    predict_threads: int = Field(default=2, ge=1)
    # onnxruntime's threads per prediction (intra-op). One: on the few cores a model service
    # gets, a second thread costs more in wake-ups than it saves (LDA, one row: ~8 us with one
    # thread, ~77 us with two), and replicas scale out, not up.
    onnx_threads: int = Field(default=1, ge=1)
    # uvloop under the grpc.aio server (lower per-call latency); `asyncio` for the standard loop.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # gRPC core experiments (its GRPC_EXPERIMENTS syntax), set before gRPC is first imported.
    # Without EventEngine's listener, the server's sockets are read by the thread that already
    # waits on the completion queue, instead of being handed over from EventEngine's own
    # threads: one cross-core wake-up less per call (single-row p50 ~0.65 -> ~0.41 ms on the
    # 2-core VM, and more calls/s at concurrency 16).
    grpc_experiments: str = Field(
        default="-event_engine_listener",
        validation_alias=AliasChoices("CRIMES_MODEL_GRPC_EXPERIMENTS", "GRPC_EXPERIMENTS"),
    )

    # gRPC transport: HTTP/2 keepalive pings, and how long in-flight calls may finish on SIGTERM.
    keepalive_time_seconds: float = Field(default=30.0, gt=0)
    keepalive_timeout_seconds: float = Field(default=10.0, gt=0)
    min_client_ping_interval_seconds: float = Field(default=10.0, gt=0)
    # Calls handled at once (a gateway sends a few per replica); past it RESOURCE_EXHAUSTED at
    # once, never an unbounded backlog in memory.
    max_concurrent_rpcs: int = Field(default=24, ge=1)
    grace_seconds: float = Field(default=10.0, ge=0)
    # Every client connection is closed (GOAWAY) after about this long (gRPC adds +-10%), and
    # its calls get the grace to finish: clients then resolve the service's name again, so a
    # replica added behind the name gets traffic, and one removed loses it, within this bound.
    max_connection_age_seconds: float = Field(default=20.0, gt=0)
    max_connection_age_grace_seconds: float = Field(default=5.0, ge=0)

    # TLS on the gRPC port (crimes.ops.tls): a certificate and its key turn it on; a client CA
    # also requires every client to present a certificate that CA signed.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None

    @model_validator(mode="after")
    def _tls_files_together(self) -> ModelServerSettings:
        tls.check_files(
            "CRIMES_MODEL_",
            cert_file=self.tls_cert_file,
            key_file=self.tls_key_file,
            client_ca_file=self.tls_client_ca_file,
        )
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("CRIMES_MODEL_TLS_CLIENT_CA_FILE needs CRIMES_MODEL_TLS_CERT_FILE")
        return self

    @field_validator("verify_key", mode="after")
    @classmethod
    def _verify_key_is_a_key(cls, value: str | None) -> str | None:
        if not value:
            return None
        signing.public_key(value)  # a bad key fails the start, not the first load
        return value

    @model_validator(mode="after")
    def _limits_fit_the_memory(self) -> ModelServerSettings:
        needed = self.memory_for(self.max_concurrent_rpcs, self.max_message_bytes)
        if needed > self.request_memory_bytes:
            raise ValueError(
                f"max_concurrent_rpcs ({self.max_concurrent_rpcs}) calls of max_message_bytes "
                f"({self.max_message_bytes}) may take {needed} bytes, more than "
                f"request_memory_bytes ({self.request_memory_bytes}): admit fewer calls, "
                "smaller messages, or give requests more memory"
            )
        return self

    @staticmethod
    def memory_for(calls: int, message_bytes: int) -> int:
        """What `calls` calls of `message_bytes` may hold at once: each call's message as
        received, as parsed, decoded into an array, and the runtime's own buffers."""
        return calls * message_bytes * COPIES_PER_CALL

    @property
    def tls(self) -> tls.ServerTls | None:
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return tls.ServerTls(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    @property
    def local_copy_dir(self) -> Path:
        return self.local_dir / self.name / "last-good"


def load_settings(deployment: str | None = None, **overrides: Any) -> ModelServerSettings:
    """Settings for a deployment: explicit overrides > environment > the deployment's file."""
    given = {key: value for key, value in overrides.items() if value is not None}
    env_file = deployment_file(deployment) if deployment is not None else None
    return ModelServerSettings(_env_file=env_file, **given)  # type: ignore[call-arg]


class ServiceAddress(BaseSettings):
    """Where this container's model service listens and what it serves: all its health probe
    needs (read from the same CRIMES_MODEL_* variables as the service)."""

    model_config = SettingsConfigDict(env_prefix="CRIMES_MODEL_", extra="ignore")

    name: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    # With TLS on, the probe verifies the service's certificate with this CA (by default the
    # certificate itself: enough for a self-signed one) under this name (by default
    # "localhost"), and presents the service's own certificate when clients must.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    tls_probe_ca_file: Path | None = None
    tls_probe_server_name: str = "localhost"

    @property
    def client_tls(self) -> tls.ClientTls | None:
        if self.tls_cert_file is None:
            return None
        mutual = self.tls_client_ca_file is not None
        return tls.ClientTls(
            ca_file=self.tls_probe_ca_file or self.tls_cert_file,
            cert_file=self.tls_cert_file if mutual else None,
            key_file=self.tls_key_file if mutual else None,
            server_name=self.tls_probe_server_name,
            setting_prefix="probe ",
        )
