"""Settings of the ETL (`CRIMES_*`): the source of raw records, the year, the split."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PORTAL_URL: Final = "https://data.cityofchicago.org"


class EtlSettings(BaseSettings):
    """The ETL: where raw records come from and how the data set is split."""

    model_config = SettingsConfigDict(env_prefix="CRIMES_", extra="ignore", validate_by_name=True)

    # The Chicago Data Portal by default; an https URL of a server speaking the Socrata API on
    # an allowed host, or a local file (CSV, CSV.gz, JSON, Parquet) in either of the portal's
    # export formats under `source_folder` (crimes.etl.source_policy).
    source: str = PORTAL_URL
    # The hosts an https source (and every redirect) may name, comma-separated.
    source_hosts: str = "data.cityofchicago.org"
    # Plain http to a listed loopback host (a portal double on this machine); off by default.
    source_allow_loopback_http: bool = False
    # The one folder source files are read from; unset, no file is read.
    source_folder: Path | None = None
    # The project's labelled synthetic sample (`synthetic:ROWS`) as a source: off but where a
    # deployment allows it (the demo without a portal, tests).
    source_allow_synthetic: bool = False
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
