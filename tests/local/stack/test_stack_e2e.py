"""The real stack: SeaweedFS' S3 API, MLflow on PostgreSQL (or folders + SQLite), up and down."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
import s3fs
from botocore.config import Config
from mlflow.tracking import MlflowClient

from crimes.lake.object_store import ensure_buckets
from crimes.local.settings import StackSettings
from crimes.local.stack import (
    PartStatus,
    StackError,
    backend,
    down,
    env_exports,
    free_port_block,
    procs,
    seaweedfs,
    status,
    up,
)

pytestmark = pytest.mark.e2e

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
OBJECT_STORE_PARTS = ("seaweedfs",)


@pytest.fixture
def seaweedfs_settings(tmp_path: Path) -> Iterator[StackSettings]:
    settings = StackSettings(
        state_dir=tmp_path / "stack",
        object_store="seaweedfs",
        postgres_url=POSTGRES_URL,
        mlflow_database=f"mlflow_e2e_{uuid.uuid4().hex[:10]}",
        mlflow_port=free_port_block(1),
        seaweedfs_port=free_port_block(1),
        seaweedfs_internal_base_port=free_port_block(9),
        start_timeout_seconds=90,
    )
    try:
        yield settings
    finally:
        try:
            down(settings)
        finally:
            backend.drop_database(settings)


def _pids_of(parts: list[PartStatus]) -> dict[str, int | None]:
    return {p.name: p.pid for p in parts}


def _all_session_pids(state_dir: Path) -> list[int]:
    store = procs.PidStore(state_dir / "pids")
    return [
        pid
        for name in store.names()
        if (record := store.read(name)) is not None
        for pid in procs.owned_processes(record)
    ]


def _live_processes_mentioning(path: Path) -> list[int]:
    """Live processes whose command line names `path` (the stack's configs and stores do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline and procs.is_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_seaweedfs_and_mlflow_on_postgres_up_use_and_down(
    seaweedfs_settings: StackSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = seaweedfs_settings
    started = time.monotonic()
    parts = up(settings)
    up_seconds = time.monotonic() - started

    assert [p.name for p in parts] == [*OBJECT_STORE_PARTS, "mlflow", "postgres"]
    assert all(p.healthy for p in parts), parts
    assert all(p.pid is not None for p in parts if p.name != "postgres")
    assert up_seconds < 60

    env = env_exports(settings)
    endpoint = f"http://127.0.0.1:{settings.seaweedfs_port}"
    assert env["CRIMES_LAKE_S3_ENDPOINT_URL"] == endpoint
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{settings.mlflow_port}"

    # The data lake through boto3, as the ETL writes it.
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
        config=Config(s3={"addressing_style": "path"}),
    )
    # The buckets exist (made by the admin identity at `up`); making them again changes nothing.
    assert ensure_buckets(endpoint, seaweedfs.identities(settings)) == []
    # The writer sees the lake's bucket only (MLflow's is the MLflow server's).
    assert [b.get("Name") for b in s3.list_buckets()["Buckets"]] == ["data"]
    s3.put_object(Bucket="data", Key="e2e/hello.txt", Body=b"hello lake")
    assert s3.get_object(Bucket="data", Key="e2e/hello.txt")["Body"].read() == b"hello lake"

    # ... and through s3fs, as pandas reads it.
    fs = s3fs.S3FileSystem(
        endpoint_url=endpoint,
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        skip_instance_cache=True,
    )
    assert fs.cat("data/e2e/hello.txt") == b"hello lake"
    with fs.open("data/e2e/from-s3fs.csv", "wb") as fh:
        fh.write(b"a,b\n1,2\n")
    assert s3.get_object(Bucket="data", Key="e2e/from-s3fs.csv")["Body"].read() == b"a,b\n1,2\n"

    # MLflow: the run lands in PostgreSQL, the artifact in SeaweedFS through the server's proxy; the
    # client needs only the tracking URI.
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment_id = client.create_experiment(f"e2e-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    artifact = settings.state_dir / "report.txt"
    artifact.write_text("an artifact in seaweedfs")
    client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["report.txt"]
    key = f"artifacts/{experiment_id}/{run.info.run_id}/artifacts/report.txt"
    as_mlflow = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=settings.mlflow_store_access_key,
        aws_secret_access_key=settings.mlflow_store_secret_key.get_secret_value(),
        region_name=env["AWS_DEFAULT_REGION"],
        config=Config(s3={"addressing_style": "path"}),
    )
    stored = as_mlflow.get_object(Bucket="mlflow", Key=key)["Body"].read()
    assert stored == b"an artifact in seaweedfs"
    assert backend.database_exists(settings)

    # A Host header by service name passes MLflow's DNS-rebinding guard.
    health = httpx.get(
        f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search?max_results=1",
        headers={"Host": "mlflow:5000"},
        trust_env=False,
    )
    assert health.status_code == 200, health.text

    now = status(settings)
    assert all(p.healthy for p in now), now
    assert _pids_of(now) == _pids_of(parts)

    # A second `up` reuses every running part.
    again_started = time.monotonic()
    again = up(settings)
    assert _pids_of(again) == _pids_of(parts)
    assert time.monotonic() - again_started < 10

    session_pids = _all_session_pids(settings.state_dir)
    # `weed mini` is one process, `mlflow server` runs uvicorn in a child.
    assert len(session_pids) >= len(OBJECT_STORE_PARTS) + 2

    down_started = time.monotonic()
    stopped = down(settings)
    down_seconds = time.monotonic() - down_started
    assert sorted(stopped) == sorted([*OBJECT_STORE_PARTS, "mlflow"])
    assert not any(procs.is_alive(pid) for pid in session_pids)
    assert _live_processes_mentioning(settings.state_dir.resolve()) == []
    assert list((settings.state_dir / "pids").iterdir()) == []
    assert not any(p.healthy for p in status(settings) if p.name != "postgres")
    assert down(settings) == []
    with capsys.disabled():
        print(f"\nstack e2e (seaweedfs+postgres): up {up_seconds:.1f} s, down {down_seconds:.1f} s")


def test_folder_lake_and_sqlite_up_and_down(folder_settings: StackSettings) -> None:
    settings = folder_settings
    parts = {p.name: p for p in up(settings)}
    assert set(parts) == {"lake", "mlflow", "sqlite"}
    assert all(p.healthy for p in parts.values()), parts

    state = settings.state_dir.resolve()
    env = env_exports(settings)
    assert env["CRIMES_LAKE_ROOT"] == f"file://{state}/lake/data"
    assert "AWS_ACCESS_KEY_ID" not in env

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment_id = client.create_experiment("folder-e2e")
    run = client.create_run(experiment_id)
    artifact = state / "note.txt"
    artifact.write_text("in a folder")
    client.log_artifact(run.info.run_id, str(artifact))
    stored = state / "lake" / "mlflow" / experiment_id / run.info.run_id / "artifacts" / "note.txt"
    assert stored.read_text() == "in a folder"
    assert (state / "mlflow" / "mlflow.db").is_file()

    assert up(settings)[1].pid == parts["mlflow"].pid
    pids = _all_session_pids(state)
    assert _live_processes_mentioning(state) != []
    assert down(settings) == ["mlflow"]
    assert not any(procs.is_alive(pid) for pid in pids)
    assert _live_processes_mentioning(state) == []


def test_a_part_that_never_gets_healthy_fails_up_with_its_log_and_leaves_nothing(
    folder_settings: StackSettings,
) -> None:
    # A directory where MLflow wants its SQLite file: the server retries opening its store
    # forever, so `up` must give up at its deadline rather than hang.
    settings = folder_settings.model_copy(update={"start_timeout_seconds": 6.0})
    (settings.state_dir / "mlflow" / "mlflow.db").mkdir(parents=True)
    started = time.monotonic()
    with pytest.raises(StackError, match=r"mlflow not healthy at .* after 6 s") as exc:
        up(settings)
    assert time.monotonic() - started < 20
    assert "last lines:" in str(exc.value)
    assert "starting mlflow" in str(exc.value)
    assert list((settings.state_dir / "pids").iterdir()) == []
    assert _live_processes_mentioning(settings.state_dir.resolve()) == []
    assert down(settings) == []
