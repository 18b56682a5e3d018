from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from crimes.cli import app
from crimes.serving.settings import DEPLOYMENTS, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The end-to-end fixtures export the stack's tracking URI for the whole session.
    for name in (
        "CRIMES_MODEL_NAME",
        "CRIMES_MODEL_PORT",
        "CRIMES_MODEL_METRICS_PORT",
        "CRIMES_MODEL_TRACKING_URI",
        "CRIMES_MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_URI",
    ):
        monkeypatch.delenv(name, raising=False)


def test_a_deployment_fills_in_its_defaults() -> None:
    dtc, lda = load_settings("dtc"), load_settings("lda")
    assert (dtc.name, dtc.port, dtc.metrics_port, dtc.alias) == (
        "dtc_model_prod",
        50051,
        9151,
        "champion",
    )
    assert (lda.name, lda.port, lda.metrics_port) == ("lda_model_prod", 50052, 9152)


def test_environment_beats_deployment_defaults_and_overrides_beat_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRIMES_MODEL_PORT", "6001")
    monkeypatch.setenv("CRIMES_MODEL_NAME", "other_model")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5001")
    settings = load_settings("lda")
    assert (settings.name, settings.port, settings.metrics_port) == ("other_model", 6001, 9152)
    assert settings.tracking_uri == "http://mlflow.example:5001"
    assert load_settings("lda", port=7001, metrics_port=None).port == 7001


def test_without_a_deployment_the_model_must_be_named() -> None:
    with pytest.raises(ValidationError, match="name"):
        load_settings(None)


def test_the_service_folders_hold_the_deployments_settings() -> None:
    for deployment, defaults in DEPLOYMENTS.items():
        lines = (ROOT / "services" / deployment / "service.env").read_text().splitlines()
        env = dict(
            line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")
        )
        assert env["CRIMES_MODEL_NAME"] == defaults["name"]
        assert int(env["CRIMES_MODEL_PORT"]) == defaults["port"]
        assert int(env["CRIMES_MODEL_METRICS_PORT"]) == defaults["metrics_port"]
        assert env["CRIMES_MODEL_ALIAS"] == "champion"


def test_the_cli_offers_both_model_services() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "dtc" in result.output
    assert "lda" in result.output
    dtc_help = CliRunner().invoke(app, ["serve", "dtc", "--help"])
    assert "--port" in dtc_help.output
    assert "--metrics-port" in dtc_help.output
