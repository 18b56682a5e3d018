"""Least privilege in the object store, on the session's real SeaweedFS (S3 API): the writer's
credentials (ETL, training) write the data lake; the reader's (model services) read it and
list it, and nothing more: every write, overwrite and delete is refused and leaves what is
stored as it was; MLflow's bucket is not theirs to read, and MLflow's identity reaches nothing
but it. A model service started the local way gets the reader's credentials."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from mypy_boto3_s3 import S3Client
from pydantic import SecretStr

from crimes.lake.settings import LakeSettings
from crimes.lake.storage import Lake
from crimes.local import launch, stack
from crimes.local.settings import StackSettings
from crimes.local.stack import core

pytestmark = pytest.mark.e2e


def _lake(env: dict[str, str], bucket: str = "data") -> Lake:
    return Lake(
        LakeSettings(
            root=f"s3://{bucket}",
            s3_endpoint_url=env["CRIMES_LAKE_S3_ENDPOINT_URL"],
            s3_access_key=SecretStr(env["AWS_ACCESS_KEY_ID"]),
            s3_secret_key=SecretStr(env["AWS_SECRET_ACCESS_KEY"]),
        )
    )


def _client(env: dict[str, str]) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=env["CRIMES_LAKE_S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def test_the_reader_reads_the_lake_and_cannot_change_it(
    stack_env: dict[str, str], stack_settings: StackSettings
) -> None:
    writer = _lake(stack_env)
    reader_env = stack.read_only(stack_env)
    assert reader_env["AWS_ACCESS_KEY_ID"] == stack_settings.lake_reader_access_key
    assert reader_env["AWS_ACCESS_KEY_ID"] != stack_env["AWS_ACCESS_KEY_ID"]
    reader = _lake(reader_env)

    key = "least-privilege/probe.txt"
    writer.write_bytes(key, b"written by the writer")
    assert reader.read_bytes(key) == b"written by the writer"
    assert reader.exists(key)
    assert key in [p.removeprefix("data/") for p in reader.fs.ls(reader._path("least-privilege"))]

    with pytest.raises((PermissionError, OSError)):
        reader.write_bytes(key, b"changed by the reader")
    with pytest.raises((PermissionError, OSError)):
        reader.write_bytes("least-privilege/new.txt", b"x")
    # One object's delete is refused outright; a bulk delete answers 200 with the key's own
    # AccessDenied (as S3 does), which s3fs does not raise: either way the object stays.
    with pytest.raises(ClientError, match="AccessDenied"):
        _client(reader_env).delete_object(Bucket="data", Key=key)
    reader.fs.rm(reader._path(key))
    # Nothing it tried took effect (read back with the writer's credentials, uncached).
    writer.fs.invalidate_cache()
    assert writer.read_bytes(key) == b"written by the writer"
    assert not writer.exists("least-privilege/new.txt")

    # MLflow's bucket is the MLflow server's: the reader cannot even list it.
    with pytest.raises((PermissionError, OSError)):
        _lake(reader_env, "mlflow").fs.ls("mlflow", refresh=True)
    # Nor the writer's: MLflow's artifacts move through the MLflow server only.
    with pytest.raises((PermissionError, OSError)):
        _lake(stack_env, "mlflow").fs.ls("mlflow", refresh=True)


def test_mlflows_identity_reaches_its_bucket_only(
    stack_env: dict[str, str], stack_settings: StackSettings
) -> None:
    mlflow_env = {
        **stack_env,
        "AWS_ACCESS_KEY_ID": stack_settings.mlflow_store_access_key,
        "AWS_SECRET_ACCESS_KEY": stack_settings.mlflow_store_secret_key.get_secret_value(),
    }
    store = _lake(mlflow_env, "mlflow")
    store.write_bytes("least-privilege/probe.txt", b"an artifact")
    assert store.read_bytes("least-privilege/probe.txt") == b"an artifact"
    _lake(stack_env).write_bytes("least-privilege/lake.txt", b"lake")
    lake_as_mlflow = _lake(mlflow_env)
    with pytest.raises((PermissionError, OSError)):
        lake_as_mlflow.read_bytes("least-privilege/lake.txt")
    with pytest.raises((PermissionError, OSError)):
        lake_as_mlflow.write_bytes("least-privilege/from-mlflow.txt", b"x")


def test_a_model_service_started_locally_gets_the_readers_credentials(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """As compose gives them: read from the running process's own environment."""
    service = launch.serve(launch.LocalProcess, "lda", {}, tmp_path)
    try:
        # Once it answers: read earlier, while the program is still being started (exec), its
        # environment can come back empty.
        service.wait_healthy(ready=False)
        environ = Path(f"/proc/{service.process.pid}/environ").read_bytes().split(b"\0")
        given = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
    finally:
        service.stop()
    assert given["AWS_ACCESS_KEY_ID"] == stack_env[core.READER_ACCESS_KEY]
    assert given["AWS_SECRET_ACCESS_KEY"] == stack_env[core.READER_SECRET_KEY]
    assert os.environ["AWS_ACCESS_KEY_ID"] != given["AWS_ACCESS_KEY_ID"]


def test_the_gateways_identity_adds_to_the_prediction_log_and_reads_the_evaluation_only(
    stack_env: dict[str, str],
) -> None:
    """What a compromised gateway could do with its keys: add files under the prediction log,
    read the latest evaluation; never read, list, change or delete anything else of the lake,
    nor read back the files it wrote. (SeaweedFS' Write action covers DELETE: under its own
    prefix it could delete log files; the README says so.)"""

    from crimes.feedback.writer import LakeSink
    from crimes.lake import layout

    writer = _lake(stack_env)
    gateway_env = stack.prediction_log_only(stack_env)
    assert gateway_env["AWS_ACCESS_KEY_ID"] == stack_env[core.LOG_ACCESS_KEY]
    gateway = _lake(gateway_env)
    logged = layout.prediction_log_key("2024-09-02", "dtc", "part-least-privilege")
    LakeSink(gateway).write(logged, b"a log file")
    assert writer.read_bytes(logged) == b"a log file"
    writer.write_bytes("least-privilege/lake.txt", b"lake")
    pointer = layout.evaluation_pointer()
    had_pointer = writer.exists(pointer)
    if not had_pointer:
        writer.write_json(pointer, {"evaluated_at": "x", "files": {"tables": {}}})
    assert gateway.read_json(pointer) == writer.read_json(pointer)
    client = _client(gateway_env)
    for refused in (
        lambda: client.put_object(Bucket="data", Key="least-privilege/gateway.txt", Body=b"x"),
        lambda: client.get_object(Bucket="data", Key="least-privilege/lake.txt"),
        lambda: client.get_object(Bucket="data", Key=logged),
        lambda: client.delete_object(Bucket="data", Key="least-privilege/lake.txt"),
        lambda: client.list_objects_v2(Bucket="data", Prefix=layout.PREDICTION_LOG_PREFIX),
        lambda: client.put_object(Bucket="data", Key=pointer, Body=b"{}"),
    ):
        with pytest.raises(ClientError, match="AccessDenied"):
            refused()
    writer.fs.invalidate_cache()
    assert writer.read_bytes(logged) == b"a log file"
    assert writer.read_bytes("least-privilege/lake.txt") == b"lake"
    assert not writer.exists("least-privilege/gateway.txt")
    if not had_pointer:
        writer.fs.rm(writer._path(pointer))
