"""What the stack writes and exports, without starting any service."""

from __future__ import annotations

import json
import socket
import subprocess
import sysconfig
from pathlib import Path

import pytest
from mlflow.server.security_utils import is_allowed_host_header
from pydantic import SecretStr
from typer.testing import CliRunner

from crimes.lake.settings import LakeSettings
from crimes.local.settings import StackSettings
from crimes.local.stack import (
    StackError,
    backend,
    env_exports,
    mlflow_server,
    read_only,
    seaweedfs,
    status,
    up,
)
from crimes.local.stack_cli import app, export_lines
from tests.conftest import PROJECT_ROOT


def _seaweedfs_settings(tmp_path: Path, **extra: object) -> StackSettings:
    return StackSettings.model_validate(
        {
            "state_dir": tmp_path / "stack",
            "object_store": "seaweedfs",
            "seaweedfs_port": 8999,
            **extra,
        }
    )


def test_env_exports_of_the_folder_profile(tmp_path: Path) -> None:
    settings = StackSettings(state_dir=tmp_path / "st", mlflow_port=5999)
    assert env_exports(settings) == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5999",
        "CRIMES_MLFLOW_TRACKING_URI": "http://127.0.0.1:5999",
        "CRIMES_LAKE_ROOT": f"file://{(tmp_path / 'st').resolve()}/lake/data",
    }


def test_env_exports_of_the_seaweedfs_profile_configure_the_lake_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _seaweedfs_settings(tmp_path, mlflow_host="0.0.0.0")
    env = env_exports(settings)
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5001"
    assert env["CRIMES_LAKE_ROOT"] == "s3://data"
    assert env["CRIMES_LAKE_S3_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:8999"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        "lake-writer",
        "lake-writer-local-only",
    )
    assert env["CRIMES_STACK_LAKE_READER_ACCESS_KEY_ID"] == "lake-reader"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    # The admin's and MLflow's keys are no client's business.
    assert "admin-local-only" not in env.values()
    assert "mlflow-store-local-only" not in env.values()

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    lake = LakeSettings()
    assert lake.root == "s3://data"
    assert lake.s3_endpoint_url == "http://127.0.0.1:8999"
    parts = {p.name: p for p in status(StackSettings(state_dir=tmp_path / "st"))}
    assert set(parts) == {"lake", "mlflow", "sqlite"}
    assert not parts["mlflow"].healthy
    assert parts["mlflow"].pid is None


def test_status_env_prints_single_quoted_exports_a_shell_can_eval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRIMES_STACK_STATE_DIR", str(tmp_path / "it's here"))
    monkeypatch.setenv("CRIMES_STACK_OBJECT_STORE", "seaweedfs")
    monkeypatch.setenv("CRIMES_STACK_LAKE_WRITER_SECRET_KEY", "s3cr'et$HOME`x`\"\\")
    result = CliRunner().invoke(app, ["status", "--env"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "export CRIMES_LAKE_ROOT='s3://data'" in lines
    assert all(line.startswith("export ") for line in lines)

    script = "\n".join([*lines, 'printf "%s" "$AWS_SECRET_ACCESS_KEY"'])
    shown = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert shown.stdout == "s3cr'et$HOME`x`\"\\"
    assert export_lines({"A": ""}) == ["export A=''"]


def test_status_without_running_parts_reports_them_down_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRIMES_STACK_STATE_DIR", str(tmp_path / "st"))
    monkeypatch.delenv("CRIMES_STACK_OBJECT_STORE", raising=False)
    monkeypatch.delenv("CRIMES_STACK_POSTGRES_URL", raising=False)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1
    assert "mlflow" in result.output
    assert "not running" in result.output
    parts = {p.name: p for p in status(StackSettings(state_dir=tmp_path / "st"))}
    assert set(parts) == {"lake", "mlflow", "sqlite"}
    assert not parts["mlflow"].healthy
    assert parts["mlflow"].pid is None


def test_a_missing_weed_binary_tells_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sysconfig, "get_path", lambda _: str(tmp_path / "no-bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(StackError, match=r"make install"):
        up(_seaweedfs_settings(tmp_path))
    # Nothing was started or recorded.
    assert not (tmp_path / "stack" / "pids").exists() or not any(
        (tmp_path / "stack" / "pids").iterdir()
    )


def test_seaweedfs_command_and_identities_come_from_the_settings(tmp_path: Path) -> None:
    settings = _seaweedfs_settings(
        tmp_path,
        seaweedfs_internal_base_port=7100,
        lake_writer_access_key="writer-1",
        lake_writer_secret_key=SecretStr("writer-pa55word"),
    )
    state = (tmp_path / "stack").resolve()
    seaweedfs.prepare(settings, state)
    argv = seaweedfs.argv(settings, state)
    assert Path(argv[0]).name == "weed"
    assert argv[1] == "mini"
    flags = dict(arg.split("=", 1) for arg in argv[2:])
    assert flags["-s3.port"] == "8999"
    assert flags["-ip.bind"] == "127.0.0.1"
    assert flags["-master.telemetry"] == "false"
    ports = [int(flags[flag]) for flag in seaweedfs.INTERNAL_PORT_FLAGS]
    assert ports == list(range(7100, 7100 + len(seaweedfs.INTERNAL_PORT_FLAGS)))
    config = Path(flags["-s3.config"])
    assert config.stat().st_mode & 0o077 == 0  # holds every secret
    identities = {i["name"]: i for i in json.loads(config.read_text())["identities"]}
    assert identities["lake-writer"]["credentials"] == [
        {"accessKey": "writer-1", "secretKey": "writer-pa55word"}
    ]
    assert identities["lake-reader"]["actions"] == ["Read:data", "List:data"]
    assert (state / "seaweedfs" / "data").is_dir()


def test_invalid_identities_fail_up_before_starting_anything(tmp_path: Path) -> None:
    settings = _seaweedfs_settings(tmp_path, lake_reader_access_key="lake-writer")
    with pytest.raises(StackError, match="its own access key"):
        up(settings)
    assert not any((tmp_path / "stack" / "pids").iterdir())


def test_read_only_swaps_in_the_readers_credentials(tmp_path: Path) -> None:
    env = env_exports(_seaweedfs_settings(tmp_path))
    reader = read_only(env)
    assert (reader["AWS_ACCESS_KEY_ID"], reader["AWS_SECRET_ACCESS_KEY"]) == (
        "lake-reader",
        "lake-reader-local-only",
    )
    assert {k: v for k, v in reader.items() if not k.startswith("AWS_")} == {
        k: v for k, v in env.items() if not k.startswith("AWS_")
    }
    folder = env_exports(StackSettings(state_dir=tmp_path / "st"))
    assert read_only(folder) == folder  # a folder lake has no credentials to swap


def test_seaweedfs_gets_none_of_our_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "S3_BUCKET", "PYTHONPATH", "VIRTUAL_ENV"):
        monkeypatch.setenv(name, "x")
    env = seaweedfs.clean_env(tmp_path)
    assert set(env) <= {"PATH", "HOME", "LANG", "LC_ALL", "TZ"}
    assert ".venv" not in env["PATH"]


def test_mlflow_accepts_local_private_and_service_name_hosts_only() -> None:
    allowed = mlflow_server.allowed_hosts(StackSettings()).split(",")
    for host in ("127.0.0.1:5001", "localhost:5001", "mlflow:5000", "mlflow", "[::1]:5001"):
        assert is_allowed_host_header(allowed, host), host
    assert is_allowed_host_header(allowed, "172.18.0.3:5000")
    assert not is_allowed_host_header(allowed, "evil.example.com")
    assert not is_allowed_host_header(allowed, "8.8.8.8:5001")


def test_mlflow_server_command_and_env(tmp_path: Path) -> None:
    settings = _seaweedfs_settings(
        tmp_path, postgres_url="postgresql://u:pw@127.0.0.1:5432/postgres"
    )
    argv = mlflow_server.argv(settings, tmp_path)
    assert argv[1:4] == ["-m", "mlflow", "server"]
    assert argv[argv.index("--workers") + 1] == "1"
    assert argv[argv.index("--artifacts-destination") + 1] == "s3://mlflow/artifacts"
    assert argv[argv.index("--backend-store-uri") + 1] == "postgresql://u:pw@127.0.0.1:5432/mlflow"
    env = mlflow_server.environment(settings)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:8999"
    # The server stores artifacts as its own identity, not the lake's writer.
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        "mlflow-store",
        "mlflow-store-local-only",
    )
    folder = StackSettings(state_dir=tmp_path)
    assert mlflow_server.artifacts_destination(folder, tmp_path) == f"file://{tmp_path}/lake/mlflow"


def test_backend_store_uri_and_redaction(tmp_path: Path) -> None:
    pg = StackSettings(
        postgres_url="postgresql://me:secret@db:5432/postgres?sslmode=disable",
        mlflow_database="runs",
    )
    assert (
        backend.backend_store_uri(pg, tmp_path)
        == "postgresql://me:secret@db:5432/runs?sslmode=disable"
    )
    assert backend.address(pg, tmp_path) == "postgresql://me:***@db:5432/runs?sslmode=disable"
    sqlite = StackSettings()
    assert backend.backend_store_uri(sqlite, tmp_path) == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    with pytest.raises(StackError, match="postgresql://"):
        backend.backend_store_uri(StackSettings(postgres_url="mysql://x@y/z"), tmp_path)


def test_an_unreachable_postgres_fails_up_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    settings = StackSettings(
        state_dir=tmp_path, postgres_url=f"postgresql://postgres@127.0.0.1:{closed_port}"
    )
    with pytest.raises(StackError, match=r"PostgreSQL at .* is not reachable"):
        up(settings)


def test_a_port_held_by_a_stranger_fails_up_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        settings = StackSettings(state_dir=tmp_path, mlflow_port=port)
        with pytest.raises(StackError, match=f"port {port} for mlflow is in use"):
            up(settings)
    assert list((tmp_path / "pids").iterdir()) == []


INSTALL_SCRIPT = PROJECT_ROOT / "scripts" / "install-system-deps.sh"


SYSTEM_BINARIES = (
    "usr/bin/prometheus",
    "usr/bin/promtool",
    "usr/sbin/dockerd",
    "usr/bin/docker-compose",
    "usr/sbin/iptables",
    "usr/bin/mmdebstrap",
)


def _fake_apt(tmp_path: Path, root: Path, *, stale_lists: bool) -> dict[str, str]:
    """An apt-get on PATH that records its calls and 'installs' by creating the binaries."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    calls = tmp_path / "apt-calls"
    (fake / "apt-get").write_text(
        f"""#!/bin/bash
echo "$*" >> {calls}
if [[ $1 == update ]]; then touch {tmp_path}/updated; exit 0; fi
if [[ {int(stale_lists)} == 1 && ! -e {tmp_path}/updated ]]; then exit 100; fi
for b in {" ".join(SYSTEM_BINARIES)}; do
  mkdir -p {root}/$(dirname $b); printf '#!/bin/sh\\n' > {root}/$b; chmod +x {root}/$b
done
"""
    )
    (fake / "apt-get").chmod(0o755)
    return {"PATH": f"{fake}:/usr/bin:/bin", "CRIMES_SYSTEM_ROOT": str(root)}


@pytest.mark.parametrize("stale_lists", [False, True])
def test_install_script_installs_when_missing_and_updates_only_on_failure(
    tmp_path: Path, stale_lists: bool
) -> None:
    env = _fake_apt(tmp_path, tmp_path / "root", stale_lists=stale_lists)
    first = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], env=env, capture_output=True, text=True, check=False
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installed prometheus docker.io docker-compose" in first.stdout
    calls = (tmp_path / "apt-calls").read_text().splitlines()
    install = (
        "install -y --no-install-recommends prometheus docker.io docker-compose iptables mmdebstrap"
    )
    assert calls == ([install, "update", install] if stale_lists else [install])

    again = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], env=env, capture_output=True, text=True, check=True
    )
    assert "already installed, nothing to do" in again.stdout
    assert len((tmp_path / "apt-calls").read_text().splitlines()) == len(calls)
