"""The object store's identities (one document for every deployment) and its command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from crimes.cli import app
from crimes.lake.object_store import ObjectStoreIdentities, seaweedfs_config

KEYS = {
    "CRIMES_OBJECT_STORE_ADMIN_ACCESS_KEY": "admin-key",
    "CRIMES_OBJECT_STORE_ADMIN_SECRET_KEY": "admin-secret-1",
    "CRIMES_LAKE_WRITER_ACCESS_KEY": "writer-key",
    "CRIMES_LAKE_WRITER_SECRET_KEY": "writer-secret-1",
    "CRIMES_LAKE_READER_ACCESS_KEY": "reader-key",
    "CRIMES_LAKE_READER_SECRET_KEY": "reader-secret-1",
    "MLFLOW_STORE_ACCESS_KEY": "mlflow-key",
    "MLFLOW_STORE_SECRET_KEY": 'mlflow-"secret\\1',
    "CRIMES_PREDICTION_LOG_ACCESS_KEY": "log-key",
    "CRIMES_PREDICTION_LOG_SECRET_KEY": "log-secret-1",
}


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    return KEYS


def test_each_identity_gets_only_its_buckets_actions(keys: dict[str, str]) -> None:
    config = seaweedfs_config(ObjectStoreIdentities())
    by_name = {i["name"]: i for i in config["identities"]}
    assert by_name["admin"]["actions"] == ["Admin:data", "Admin:mlflow"]
    assert by_name["lake-writer"]["actions"] == ["Read:data", "List:data", "Write:data"]
    assert by_name["lake-reader"]["actions"] == ["Read:data", "List:data"]
    assert by_name["mlflow-store"]["actions"] == ["Read:mlflow", "List:mlflow", "Write:mlflow"]
    # The gateway: files added under the prediction log, the evaluation read; nothing else.
    assert by_name["prediction-log"]["actions"] == [
        "Write:data/chicago/crimes/predictions/*",
        "Read:data/chicago/crimes/evaluation/served/*",
    ]
    assert by_name["mlflow-store"]["credentials"] == [
        {"accessKey": "mlflow-key", "secretKey": 'mlflow-"secret\\1'}
    ]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CRIMES_LAKE_READER_ACCESS_KEY", "writer-key", "its own access key"),
        ("CRIMES_LAKE_READER_SECRET_KEY", "short", "at least 8"),
        ("CRIMES_LAKE_READER_SECRET_KEY", "has a space", "without whitespace"),
        ("CRIMES_LAKE_READER_ACCESS_KEY", "a/b", "letters, digits"),
    ],
)
def test_bad_keys_are_refused(
    keys: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        ObjectStoreIdentities()


def test_config_command_writes_an_owner_only_file_a_json_parser_reads(
    keys: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "config" / "identities.json"
    result = CliRunner().invoke(app, ["object-store", "config", str(path)])
    assert result.exit_code == 0, result.output
    assert "wrote 5 identities" in result.output
    assert path.stat().st_mode & 0o777 == 0o600
    names = [i["name"] for i in json.loads(path.read_text())["identities"]]
    assert names == ["admin", "lake-writer", "lake-reader", "mlflow-store", "prediction-log"]
    assert [p.name for p in path.parent.iterdir()] == ["identities.json"]  # no temporary left


def test_config_command_hands_the_file_to_the_owner_it_is_given(
    keys: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "identities.json"
    owner = f"{os.getuid()}:{os.getgid()}"
    result = CliRunner().invoke(app, ["object-store", "config", str(path), "--owner", owner])
    assert result.exit_code == 0, result.output
    assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid())
    bad = CliRunner().invoke(app, ["object-store", "config", str(path), "--owner", "seaweed"])
    assert bad.exit_code == 2
    assert "--owner must be uid:gid" in bad.output


def test_a_missing_key_fails_in_one_line_naming_it(
    keys: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFLOW_STORE_SECRET_KEY")
    result = CliRunner().invoke(app, ["object-store", "config", str(tmp_path / "x.json")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "MLFLOW_STORE_SECRET_KEY" in result.output
    assert not (tmp_path / "x.json").exists()


def test_buckets_command_gives_up_in_one_line_when_nothing_answers(
    keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bucket job holds the admin's keys only.
    for name in keys:
        if "ADMIN" not in name:
            monkeypatch.delenv(name)
    result = CliRunner().invoke(
        app, ["object-store", "buckets", "--endpoint", "http://127.0.0.1:9", "--wait", "0"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("crimes object-store buckets:")
    assert result.output.count("\n") == 1
