"""Settings of the data lake (`CRIMES_LAKE_*`): its root and S3 credentials."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from crimes.settings import DEFAULT_STATE_DIR


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


@lru_cache(maxsize=1)
def lake_settings() -> LakeSettings:
    return LakeSettings()
