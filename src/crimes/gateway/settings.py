"""Settings of the gateway, read from `CRIMES_GATEWAY_*` environment variables (and, under
`crimes serve gateway`, from its deployment's file `services/gateway/service.env`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crimes.ops import tls
from crimes.settings import DEFAULT_TRACKING_URI, deployment_file, deployment_port


def with_deployment_port(address: str, deployment: str) -> str:
    """A model service's gRPC target; one that names no port gets the deployment's own
    (`dns:///dtc` -> `dns:///dtc:50051`), so a port is written only in its deployment's file."""
    if address.startswith(("ipv4:", "ipv6:", "unix:")):
        return address
    host = address.rsplit("/", 1)[-1]
    has_port = host.rsplit("]", 1)[-1].count(":") == 1 if host.startswith("[") else ":" in host
    return address if has_port else f"{address}:{deployment_port(deployment)}"


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CRIMES_GATEWAY_", extra="ignore", validate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default_factory=lambda: deployment_port("gateway"), ge=0, le=65535)
    # gRPC targets of the model services. `dns:///name:port` resolves to every replica and
    # calls are spread over them round-robin; `ipv4:host:p1,host:p2` lists replicas by hand.
    # Without a port, the model deployment's own (services/<model>/service.env).
    dtc_address: str = "dns:///127.0.0.1"
    lda_address: str = "dns:///127.0.0.1"
    # Each model call must answer within this; a slow model never holds the response back.
    deadline_seconds: float = Field(default=1.0, gt=0)
    # Extra attempts, only when the channel says UNAVAILABLE (the call never reached a model).
    retries: int = Field(default=1, ge=0, le=5)
    # How often each service's metadata (model and transformation versions) is refreshed.
    refresh_seconds: float = Field(default=2.0, gt=0)
    max_batch_records: int = Field(default=1000, ge=1, le=100_000)
    # Optional prediction cache; unset or unreachable means no cache, never an error.
    redis_url: str | None = None
    cache_ttl_seconds: int = Field(default=3600, ge=1)
    # MLflow, to fetch a transformation the model services name by its run; the data lake's
    # model bundles are the fallback.
    tracking_uri: str = Field(default=DEFAULT_TRACKING_URI)
    # Every MLflow call of the gateway gives up after this (and this many retries).
    mlflow_timeout_seconds: float = Field(default=5.0, gt=0)
    mlflow_max_retries: int = Field(default=1, ge=0, le=10)
    # Prometheus' /metrics on a port of its own (the deployments' internal one, reached by
    # Prometheus only); unset: on the gateway's port, behind the API key like every route.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # /docs, /redoc and /openapi.json: off in the production overlays (the document is the
    # repository's, and the UI is a browser surface a keyed API does not need).
    docs: bool = True
    # How often /models' view of every replica (a DNS lookup, two RPCs per replica) is refreshed
    # in the background: /models answers from it, so its cost does not grow with its callers.
    models_refresh_seconds: float = Field(default=15.0, gt=0)
    # The key of every route but the health probes: clients send it as `X-API-Key`. The
    # gateway refuses to start without one unless `allow_no_api_key` says this deployment is
    # local-only (the local tooling and compose's local-only profile say so; no shipped
    # deployment does).
    api_key: SecretStr | None = None
    allow_no_api_key: bool = False
    # Larger request bodies are refused with 413 before they are read.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # Prediction requests being answered at once; past it, 503 with Retry-After (a client's
    # load beyond what the models can take waits at the client, not in the gateway's memory).
    max_in_flight: int = Field(default=256, ge=1)
    # A request's whole body must arrive within this (408 past it): a client that sends it a
    # byte at a time holds nothing of the gateway's for longer, and never an in-flight slot
    # (taken only once the body is in).
    body_timeout_seconds: float = Field(default=10.0, gt=0)
    # A request's headers must arrive within this of its first byte, else its connection is
    # closed (a client that sends a header byte now and then holds no descriptor for long).
    header_timeout_seconds: float = Field(default=10.0, gt=0)

    # How often the latest evaluation of served predictions (its realized accuracy per
    # version, in the lake) is read for /metrics; 0: never (a gateway without lake access).
    accuracy_refresh_seconds: float = Field(default=300.0, ge=0)

    # Shadow scoring: each model's challenger deployment (the model server following the alias
    # `challenger`); unset: no shadow for that model. Without a port, the challenger
    # deployment's own (services/<model>-challenger/service.env).
    dtc_challenger_address: str | None = None
    lda_challenger_address: str | None = None
    # The share of answered requests whose records also go to the challengers (0: none).
    shadow_share: float = Field(default=0.1, ge=0, le=1)
    # Records waiting for a challenger, per model; beyond it shadow records are dropped.
    shadow_queue_records: int = Field(default=10_000, ge=1)
    # A shadow batch (the challenger's transformation and call) gives up after this.
    shadow_deadline_seconds: float = Field(default=2.0, gt=0)

    # Drift: the rolling window of served records per served model version, and how many it
    # must hold before its PSI is judged (the PSI of a window that did not drift is about
    # (buckets - 1) / records: ~0.01 at 5,000, ~0.05 at 1,000).
    drift_window_records: int = Field(default=5000, ge=100, le=1_000_000)
    drift_min_records: int = Field(default=1000, ge=1)

    # TLS to the model services (crimes.ops.tls): the CA that signed their certificates turns
    # it on; a certificate and key of the gateway's own when they require clients to present
    # one; the name their certificates carry when the address dialled is not it.
    model_tls_ca_file: Path | None = None
    model_tls_cert_file: Path | None = None
    model_tls_key_file: Path | None = None
    model_tls_server_name: str | None = None

    @model_validator(mode="after")
    def _tls_files(self) -> GatewaySettings:
        tls.check_files(
            "CRIMES_GATEWAY_MODEL_",
            ca_file=self.model_tls_ca_file,
            cert_file=self.model_tls_cert_file,
            key_file=self.model_tls_key_file,
        )
        if self.model_tls_cert_file is not None and self.model_tls_ca_file is None:
            raise ValueError(
                "CRIMES_GATEWAY_MODEL_TLS_CERT_FILE needs CRIMES_GATEWAY_MODEL_TLS_CA_FILE"
            )
        return self

    @property
    def model_tls(self) -> tls.ClientTls | None:
        if self.model_tls_ca_file is None:
            return None
        return tls.ClientTls(
            self.model_tls_ca_file,
            self.model_tls_cert_file,
            self.model_tls_key_file,
            self.model_tls_server_name,
            setting_prefix="CRIMES_GATEWAY_MODEL_",
        )

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_port_is_none(cls, value: object) -> object:
        # An empty value (a deployment's way to unset the file's port): on the API's port.
        return None if value == "" else value

    @field_validator("api_key", mode="after")
    @classmethod
    def _empty_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @model_validator(mode="after")
    def _model_ports(self) -> GatewaySettings:
        self.dtc_address = with_deployment_port(self.dtc_address, "dtc")
        self.lda_address = with_deployment_port(self.lda_address, "lda")
        if self.dtc_challenger_address:
            self.dtc_challenger_address = with_deployment_port(
                self.dtc_challenger_address, "dtc-challenger"
            )
        if self.lda_challenger_address:
            self.lda_challenger_address = with_deployment_port(
                self.lda_challenger_address, "lda-challenger"
            )
        return self

    def challenger_addresses(self) -> dict[str, str]:
        given = {"dtc": self.dtc_challenger_address, "lda": self.lda_challenger_address}
        return {kind: address for kind, address in given.items() if address}


class NoApiKey(ValueError):
    """A gateway without a key in a deployment that did not say it is local-only."""


def refuse_without_key(settings: GatewaySettings) -> None:
    """Fail closed: no key serves the world only where the deployment said it is local."""
    if settings.api_key is None and not settings.allow_no_api_key:
        raise NoApiKey(
            "CRIMES_GATEWAY_API_KEY is not set: the gateway does not serve without a key "
            "(CRIMES_GATEWAY_ALLOW_NO_API_KEY=true only for a local-only deployment)"
        )


def load_settings(**overrides: Any) -> GatewaySettings:
    """The gateway deployment's settings: explicit overrides > environment > its file."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return GatewaySettings(_env_file=deployment_file("gateway"), **given)  # type: ignore[call-arg]
