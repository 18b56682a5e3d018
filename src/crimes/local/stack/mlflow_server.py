"""The MLflow 3 tracking server, run from our own venv, proxying artifacts to the object store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from crimes.lake.object_store import MLFLOW_BUCKET, REGION
from crimes.local.settings import StackSettings
from crimes.local.stack import backend, seaweedfs

NAME = "mlflow"

# MLflow >= 3.5 puts a Host-header check (against DNS rebinding) and a CORS check in front of the
# server. Its default allow-list is localhost, 127.0.0.1, [::1] and the private IP ranges, so a
# client inside a container reaching the server by a name (a compose service "mlflow", or
# host.docker.internal) would get "Invalid Host header". We pass --allowed-hosts explicitly: the
# same defaults plus those names and the configured bind host, rather than '*' or
# --disable-security-middleware, which would switch the protection off for everyone. An operator
# can still override the whole list with MLFLOW_SERVER_ALLOWED_HOSTS. CORS is left at MLflow's
# default (browser origins on localhost only): the stack's clients are not browsers.
_EXTRA_ALLOWED_HOSTS = ("mlflow", "host.docker.internal")
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "0.0.0.0")
_PRIVATE_HOST_PATTERNS = ("10.*", "192.168.*", *(f"172.{i}.*" for i in range(16, 32)))


def client_host(settings: StackSettings) -> str:
    """Where a local client reaches the server (a wildcard bind is reached on loopback)."""
    return "127.0.0.1" if settings.mlflow_host in ("0.0.0.0", "::", "") else settings.mlflow_host


def tracking_uri(settings: StackSettings) -> str:
    host = client_host(settings)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.mlflow_port}"


def health_url(settings: StackSettings) -> str:
    return f"{tracking_uri(settings)}/health"


def allowed_hosts(settings: StackSettings) -> str:
    if override := os.environ.get("MLFLOW_SERVER_ALLOWED_HOSTS"):
        return override
    names = [*_LOCAL_HOSTS, *_EXTRA_ALLOWED_HOSTS]
    if settings.mlflow_host not in names and settings.mlflow_host not in ("::", ""):
        names.append(settings.mlflow_host)
    hosts: list[str] = []
    for name in names:
        # The Host header carries the port; fnmatch treats '[' as a character class.
        hosts += [name, f"{name.replace('[', '[[]', 1)}:*"]
    return ",".join([*hosts, *_PRIVATE_HOST_PATTERNS])


def artifacts_destination(settings: StackSettings, state_dir: Path) -> str:
    if settings.object_store == "seaweedfs":
        return f"s3://{MLFLOW_BUCKET}/artifacts"
    return f"file://{state_dir / 'lake' / 'mlflow'}"


def argv(settings: StackSettings, state_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        settings.mlflow_host,
        "--port",
        str(settings.mlflow_port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend.backend_store_uri(settings, state_dir),
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts_destination(settings, state_dir),
        "--allowed-hosts",
        allowed_hosts(settings),
    ]


def environment(settings: StackSettings) -> dict[str, str]:
    env = dict(os.environ)
    # A client-side tracking URI in our own shell must not point the server at itself.
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_SERVER_ALLOWED_HOSTS"):
        env.pop(key, None)
    # The background job runner adds ~6 processes, ~700 MB and ~15 s of start-up for features
    # (scheduled GenAI jobs) this project does not use.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    if settings.object_store == "seaweedfs":
        # Only the server talks to the object store for artifacts, as its own identity:
        # clients upload through its mlflow-artifacts proxy.
        env["MLFLOW_S3_ENDPOINT_URL"] = seaweedfs.endpoint_url(settings)
        env["AWS_ACCESS_KEY_ID"] = settings.mlflow_store_access_key
        env["AWS_SECRET_ACCESS_KEY"] = settings.mlflow_store_secret_key.get_secret_value()
        env["AWS_DEFAULT_REGION"] = REGION
    return env
