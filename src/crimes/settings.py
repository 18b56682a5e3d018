"""Settings of every part of the project, read from the environment.

One pydantic-settings class per part. Defaults are local-only (a folder data lake, an MLflow
server on 127.0.0.1); nothing secret is baked in beyond the throw-away credentials of the local
Swift profile that `crimes stack up` creates on this machine.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path(".crimes")
PORTAL_URL = "https://data.cityofchicago.org"
EXPERIMENT_NAME = "Chicago Crimes 2024"


class LakeSettings(BaseSettings):
    """Where the data lake lives: `s3://bucket` (any S3 API) or `file:///folder`."""

    model_config = SettingsConfigDict(
        env_prefix="CRIMES_LAKE_", extra="ignore", validate_by_name=True
    )

    root: str = Field(default=f"file://{(DEFAULT_STATE_DIR / 'lake').resolve()}/data")
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CRIMES_LAKE_S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"),
    )
    s3_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CRIMES_LAKE_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
    )
    s3_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CRIMES_LAKE_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
    )
    s3_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("CRIMES_LAKE_S3_REGION", "AWS_DEFAULT_REGION"),
    )


class TrackingSettings(BaseSettings):
    """The MLflow tracking server and experiment every run is logged to."""

    model_config = SettingsConfigDict(env_prefix="CRIMES_", extra="ignore", validate_by_name=True)

    tracking_uri: str = Field(
        default="http://127.0.0.1:5001",
        validation_alias=AliasChoices("CRIMES_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    experiment: str = Field(
        default=EXPERIMENT_NAME, validation_alias=AliasChoices("CRIMES_MLFLOW_EXPERIMENT")
    )


class EtlSettings(BaseSettings):
    """The ETL: where raw records come from and how the data set is split."""

    model_config = SettingsConfigDict(env_prefix="CRIMES_", extra="ignore", validate_by_name=True)

    # The Chicago Data Portal by default; an http(s) URL of any server speaking the Socrata API,
    # or a local file (CSV, CSV.gz, JSON, Parquet) in either of the portal's export formats.
    source: str = PORTAL_URL
    year: int = Field(default=2024, ge=2001, le=2100)
    app_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CRIMES_APP_TOKEN", "SOCRATA_APP_TOKEN")
    )
    page_size: int = Field(default=50_000, ge=1, le=50_000)
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_seconds: float = Field(default=1.0, ge=0)
    request_timeout_seconds: float = Field(default=120.0, gt=0)
    test_size: float = Field(default=0.3, gt=0, lt=1)
    seed: int = 42
    # A data set smaller than this after cleaning is refused rather than published.
    min_rows: int = Field(default=100, ge=1)


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
    # Throw-away credentials of the local Swift profile only (tempauth user test:tester).
    swift_access_key: str = "test:tester"
    swift_secret_key: SecretStr = SecretStr("testing")
    start_timeout_seconds: float = 90.0
    # What `crimes demo` adds on top: Airflow's API, the model services and the gateway.
    airflow_port: int = 8080
    gateway_port: int = 8800
    dtc_port: int = 50051
    lda_port: int = 50052
    dtc_replicas: int = Field(default=2, ge=1, le=8)


class TrainingSettings(BaseSettings):
    """The (re)training: search budget, evaluation and promotion policy."""

    model_config = SettingsConfigDict(
        env_prefix="CRIMES_TRAIN_", extra="ignore", validate_by_name=True
    )

    year: int = Field(default=2024, ge=2001, le=2100)
    # Sized so the whole training DAG fits 10 minutes on 2 cores with the full 2024 data.
    trials: int = Field(default=12, ge=1, le=500)
    cv_folds: int = Field(default=3, ge=2, le=10)
    seed: int = 42
    n_jobs: int = Field(default=2, ge=1)
    # A new version that cannot be compared with the champion (the features changed) must
    # reach this test weighted F1 to take `champion`; so must the very first version.
    promotion_floor_f1: float = Field(default=0.95, ge=0, le=1)
    promotion_attempts: int = Field(default=5, ge=1)


@lru_cache(maxsize=1)
def lake_settings() -> LakeSettings:
    return LakeSettings()


@lru_cache(maxsize=1)
def tracking_settings() -> TrackingSettings:
    return TrackingSettings()
