"""What every part's settings share; each part has its own settings class in its package
(`crimes.etl.settings`, `crimes.training.settings`, `crimes.lake.settings`,
`crimes.serving.settings`, `crimes.gateway.settings`, `crimes.local.settings`).

Defaults are local-only (a folder data lake, an MLflow server on 127.0.0.1); nothing secret is
baked in.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Final

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_STATE_DIR = Path(".crimes")
EXPERIMENT_NAME = "Chicago Crimes 2024"
# The local stack's MLflow: every part's default, accepted by no shipped deployment (each
# names its own server).
DEFAULT_TRACKING_URI: Final = "http://127.0.0.1:5001"


class TrackingSettings(BaseSettings):
    """The MLflow tracking server and experiment every run is logged to."""

    model_config = SettingsConfigDict(env_prefix="CRIMES_", extra="ignore", validate_by_name=True)

    tracking_uri: str = Field(
        default=DEFAULT_TRACKING_URI,
        validation_alias=AliasChoices("CRIMES_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    experiment: str = Field(
        default=EXPERIMENT_NAME, validation_alias=AliasChoices("CRIMES_MLFLOW_EXPERIMENT")
    )


@lru_cache(maxsize=1)
def tracking_settings() -> TrackingSettings:
    return TrackingSettings()


# Each deployable's own settings live in one file, `services/<deployment>/service.env`: compose
# reads it (`env_file`), and so do `crimes serve ...` and whatever needs a deployment's port.
DEPLOYMENTS: Final = ("dtc", "lda", "gateway", "dtc-challenger", "lda-challenger")
DEPLOYMENTS_DIR_VARIABLE: Final = "CRIMES_DEPLOYMENTS_DIR"
# The repository's folder (src/crimes/settings.py -> the project root); images set the variable.
_REPOSITORY_DEPLOYMENTS: Final = Path(__file__).resolve().parents[2] / "services"


def describe(error: ValidationError) -> str:
    """Settings that failed validation, as one line for people (no pydantic boilerplate)."""
    return "; ".join(
        " ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}".removeprefix(": ").split()).replace(
            "Value error, ", ""
        )
        for e in error.errors()
    )


class DeploymentError(RuntimeError):
    """A deployment's settings file is missing or unreadable."""


def deployment_file(deployment: str) -> Path:
    if deployment not in DEPLOYMENTS:
        raise DeploymentError(f"unknown deployment {deployment!r}: expected one of {DEPLOYMENTS}")
    folder = Path(os.environ.get(DEPLOYMENTS_DIR_VARIABLE) or _REPOSITORY_DEPLOYMENTS)
    path = folder / deployment / "service.env"
    if not path.is_file():
        raise DeploymentError(
            f"no settings file for deployment {deployment!r} at {path} "
            f"(set {DEPLOYMENTS_DIR_VARIABLE} to the folder holding services/<deployment>/)"
        )
    return path


@lru_cache(maxsize=8)
def deployment_settings(deployment: str) -> dict[str, str]:
    """The `NAME=value` settings of a deployment's file (comments and blank lines skipped)."""
    values = dotenv_values(deployment_file(deployment))
    return {name: value for name, value in values.items() if value is not None}


def deployment_port(deployment: str, setting: str = "PORT") -> int:
    """A deployment's port as its file sets it (`CRIMES_MODEL_PORT`, `CRIMES_GATEWAY_PORT`)."""
    prefix = "CRIMES_GATEWAY_" if deployment == "gateway" else "CRIMES_MODEL_"
    value = deployment_settings(deployment).get(prefix + setting)
    if value is None or not value.isdigit():
        raise DeploymentError(f"{deployment_file(deployment)} sets no {prefix + setting}")
    return int(value)
