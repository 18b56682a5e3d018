from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from crimes.cli import app
from crimes.serving.settings import load_settings
from crimes.settings import DeploymentError, deployment_settings
from tests.conftest import PROJECT_ROOT

ROOT = PROJECT_ROOT


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


def test_the_settings_come_from_the_deployments_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for deployment in ("dtc", "lda"):
        from_file = deployment_settings(deployment)
        settings = load_settings(deployment)
        assert settings.name == from_file["CRIMES_MODEL_NAME"]
        assert settings.port == int(from_file["CRIMES_MODEL_PORT"])
        assert settings.metrics_port == int(from_file["CRIMES_MODEL_METRICS_PORT"])
    # Another folder of deployments (as an image has it): its file, not the repository's.
    (tmp_path / "dtc").mkdir()
    (tmp_path / "dtc" / "service.env").write_text(
        "# a comment\nCRIMES_MODEL_NAME=dtc_model_prod\nCRIMES_MODEL_PORT=6100\n"
        "CRIMES_MODEL_METRICS_PORT=6200\n"
    )
    monkeypatch.setenv("CRIMES_DEPLOYMENTS_DIR", str(tmp_path))
    deployment_settings.cache_clear()
    try:
        assert (load_settings("dtc").port, load_settings("dtc").metrics_port) == (6100, 6200)
        with pytest.raises(DeploymentError, match="no settings file for deployment 'lda'"):
            load_settings("lda")
    finally:
        deployment_settings.cache_clear()


def test_the_cli_offers_both_model_services() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "dtc" in result.output
    assert "lda" in result.output
    dtc_help = CliRunner().invoke(app, ["serve", "dtc", "--help"])
    assert "--port" in dtc_help.output
    assert "--metrics-port" in dtc_help.output
