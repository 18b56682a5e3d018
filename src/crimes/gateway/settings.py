"""Settings of the gateway, read from `CRIMES_GATEWAY_*` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CRIMES_GATEWAY_", extra="ignore", validate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8800, ge=0, le=65535)
    # gRPC targets of the model services. `dns:///name:port` resolves to every replica and
    # calls are spread over them round-robin; `ipv4:host:p1,host:p2` lists replicas by hand.
    dtc_address: str = "dns:///127.0.0.1:50051"
    lda_address: str = "dns:///127.0.0.1:50052"
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
    tracking_uri: str = Field(default="http://127.0.0.1:5001")
    # Optional protection of the predict endpoints: clients send it as `X-API-Key`.
    api_key: SecretStr | None = None
    # Larger request bodies are refused with 413 before they are read.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
