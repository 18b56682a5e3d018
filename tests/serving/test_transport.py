"""The model service's gRPC core experiments reach gRPC core, or the service says they did not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from crimes.serving.settings import load_settings
from crimes.serving.transport import VARIABLE, apply_grpc_experiments


def _import_grpc_after_applying(experiments: str) -> subprocess.CompletedProcess[str]:
    script = (
        "import sys\n"
        "from crimes.serving.transport import apply_grpc_experiments\n"
        f"assert apply_grpc_experiments({experiments!r})\n"
        "import grpc\n"
        "print('imported')\n"
    )
    env = {key: value for key, value in os.environ.items() if key != VARIABLE}
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )


def test_applied_experiments_are_read_by_grpc_core_when_it_loads() -> None:
    # gRPC core names an experiment it does not know: proof that it read the value.
    done = _import_grpc_after_applying("-event_engine_listener,no_such_experiment")
    assert done.returncode == 0, done.stderr
    assert "Unknown experiment: no_such_experiment" in done.stderr
    assert "Unknown experiment: event_engine_listener" not in done.stderr


def test_too_late_when_grpc_is_already_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    import grpc  # noqa: F401  (this process has loaded gRPC core: the setting can no longer apply)

    # The environment holds the value already: nothing to apply, nothing to warn about.
    monkeypatch.setenv(VARIABLE, "-event_engine_listener")
    assert apply_grpc_experiments("-event_engine_listener") is True
    assert apply_grpc_experiments("-event_engine_client") is False
    assert os.environ[VARIABLE] == "-event_engine_listener"


def test_the_setting_defaults_to_the_legacy_listener_and_reads_either_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    monkeypatch.delenv("CRIMES_MODEL_GRPC_EXPERIMENTS", raising=False)
    assert load_settings("dtc").grpc_experiments == "-event_engine_listener"
    monkeypatch.setenv(VARIABLE, "")
    assert load_settings("dtc").grpc_experiments == ""
    monkeypatch.setenv("CRIMES_MODEL_GRPC_EXPERIMENTS", "-event_engine_client")
    assert load_settings("dtc").grpc_experiments == "-event_engine_client"
