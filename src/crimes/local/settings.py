"""Settings of the local stack and the demo (`CRIMES_STACK_*`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from crimes.settings import DEFAULT_STATE_DIR, deployment_port


class StackSettings(BaseSettings):
    """The local stack that `crimes stack up` starts: object store, MLflow server, databases."""

    model_config = SettingsConfigDict(
        env_prefix="CRIMES_STACK_", extra="ignore", validate_by_name=True
    )

    state_dir: Path = DEFAULT_STATE_DIR / "stack"
    # "folder": the data lake and MLflow artifacts in local folders (the embedded default);
    # "swift": a real S3 API served by OpenStack Swift from Debian's packages.
    object_store: Literal["folder", "swift"] = "folder"
    # PostgreSQL server for MLflow's backend store; SQLite in state_dir when unset.
    postgres_url: str | None = None
    mlflow_database: str = "mlflow"
    mlflow_host: str = "127.0.0.1"
    mlflow_port: int = 5001
    swift_port: int = 8070
    swift_backend_base_port: int = 6200
    # Throw-away credentials of the local Swift profile only: the writer (tempauth user
    # test:tester, the account's admin) and the reader the model services get (test:reader,
    # read access to the data lake's bucket only).
    swift_access_key: str = "test:tester"
    swift_secret_key: SecretStr = SecretStr("testing")
    swift_reader_access_key: str = "test:reader"
    swift_reader_secret_key: SecretStr = SecretStr("reading")
    start_timeout_seconds: float = 90.0
    # What `crimes demo` adds on top: Airflow's API, the model services and the gateway.
    airflow_port: int = 8080
    # The deployments' own ports by default (services/<deployment>/service.env).
    gateway_port: int = Field(default_factory=lambda: deployment_port("gateway"))
    dtc_port: int = Field(default_factory=lambda: deployment_port("dtc"))
    lda_port: int = Field(default_factory=lambda: deployment_port("lda"))
    dtc_replicas: int = Field(default=2, ge=1, le=8)
    # Each model's challenger deployment (one replica each), shadowing the gateway's answers.
    dtc_challenger_port: int = Field(default_factory=lambda: deployment_port("dtc-challenger"))
    lda_challenger_port: int = Field(default_factory=lambda: deployment_port("lda-challenger"))
    # The demo's Prometheus (scraping the gateway and every model replica).
    prometheus_port: int = 9090
