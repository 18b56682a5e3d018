"""What the monitoring reads from the running system: the gateway's drift report, and the
verdict on it (`crimes drift`, the `monitor_drift` DAG)."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from crimes.drift.trigger import TriggerPolicy
from crimes.drift.verdict import Verdict, judge


class MonitorSettings(BaseSettings):
    """`CRIMES_MONITOR_*`: where the gateway is, and what drift calls for a retrain."""

    model_config = SettingsConfigDict(
        env_prefix="CRIMES_MONITOR_", extra="ignore", validate_by_name=True
    )

    gateway_url: str = "http://127.0.0.1:8800"
    # The gateway's API key (its reports are behind it like every route but the probes).
    gateway_api_key: SecretStr | None = None
    # A judged feature's PSI above this, for any served model version, starts the ETL and
    # training loop (the alert CrimesFeatureDrift uses the same 0.2).
    drift_threshold: float = Field(default=0.2, gt=0)
    timeout_seconds: float = Field(default=10.0, gt=0)
    # What a drift-triggered retrain also needs (crimes.drift.trigger): drift in this many
    # windows in a row, each window's records from this many distinct clients, no retrain
    # triggered within the cooldown, and none queued or running.
    drift_consecutive_windows: int = Field(default=3, ge=1, le=48)
    drift_min_clients: int = Field(default=2, ge=1)
    retrain_cooldown_hours: float = Field(default=24.0, ge=0)

    def trigger_policy(self) -> TriggerPolicy:
        return TriggerPolicy(
            cooldown_hours=self.retrain_cooldown_hours,
            consecutive_windows=self.drift_consecutive_windows,
            min_clients=self.drift_min_clients,
        )


class GatewayUnreachable(RuntimeError):
    pass


def read_drift(settings: MonitorSettings) -> dict[str, Any]:
    """The gateway's `GET /drift` answer."""
    return _read(settings, "/drift", "drift report")


def read_models(settings: MonitorSettings) -> dict[str, Any]:
    """The gateway's `GET /models` answer (each model's replicas, challenger and drift)."""
    return _read(settings, "/models", "models report")


def _read(settings: MonitorSettings, path: str, what: str) -> dict[str, Any]:
    url = f"{settings.gateway_url.rstrip('/')}{path}"
    try:
        key = settings.gateway_api_key
        headers = {"X-API-Key": key.get_secret_value()} if key else {}
        response = httpx.get(
            url, headers=headers, timeout=settings.timeout_seconds, trust_env=False
        )
        response.raise_for_status()
        report = response.json()
    except (httpx.HTTPError, ValueError) as error:
        raise GatewayUnreachable(f"no {what} from {url}: {error}") from error
    if not isinstance(report, dict):
        raise GatewayUnreachable(f"{url} did not answer a {what}")
    return report


def check_drift(settings: MonitorSettings) -> tuple[Verdict, dict[str, Any]]:
    report = read_drift(settings)
    return judge(report, settings.drift_threshold), report
