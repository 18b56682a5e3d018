"""The SHA-256 of a model's files: any change, addition or removal changes it; the file MLflow's
client writes on download does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crimes.registry.artifacts import bound_mlflow_calls, directory_sha256


def test_any_change_to_the_files_changes_the_digest(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text("flavors: {sklearn: {}}\n")
    (tmp_path / "model.skops").write_bytes(b"\x00model bytes")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "requirements.txt").write_text("scikit-learn\n")
    digest = directory_sha256(tmp_path)
    assert digest == directory_sha256(tmp_path)  # stable
    (tmp_path / "registered_model_meta").write_text("model_name: m\nmodel_version: 3\n")
    assert directory_sha256(tmp_path) == digest  # written by the client: not verified
    (tmp_path / "model.skops").write_bytes(b"\x00model bytez")
    assert directory_sha256(tmp_path) != digest
    (tmp_path / "model.skops").write_bytes(b"\x00model bytes")
    assert directory_sha256(tmp_path) == digest
    (tmp_path / "extra.pkl").write_bytes(b"a file slipped in")
    assert directory_sha256(tmp_path) != digest
    (tmp_path / "extra.pkl").unlink()
    (tmp_path / "sub" / "requirements.txt").rename(tmp_path / "requirements.txt")
    assert directory_sha256(tmp_path) != digest  # a path is part of what is verified


def test_mlflow_calls_are_bounded_and_artifacts_come_through_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD",
    ):  # set by the call, restored after the test
        monkeypatch.delenv(name, raising=False)
    bound_mlflow_calls(2.5, 1)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "2"
    # Set, so the client never asks the server whether presigned downloads are offered.
    assert os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"] == "false"
