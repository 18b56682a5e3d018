"""OpenStack Swift with its S3 API (s3api + tempauth), as four local servers.

Swift comes from Debian's packages and runs on Debian's /usr/bin/python3, not on our venv: the
servers are called by absolute path with a minimal environment, so that nothing of the venv
(PYTHONPATH, VIRTUAL_ENV, a venv PATH) leaks into them. Everything they write lives under
<state_dir>/swift. The hash prefix/suffix and the storage policies are always read from
/etc/swift/swift.conf (Swift hard-codes that file), which Debian's `swift` package installs.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from crimes.local.settings import StackSettings
from crimes.local.stack.procs import StackError
from crimes.ops.logs import get_logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = get_logger("crimes.local.stack")

BIN_DIR = Path("/usr/bin")
SWIFT_CONF = Path("/etc/swift/swift.conf")
REGION = "us-east-1"
BUCKETS = ("data", "mlflow")
# What the reader may read: the data lake (its fallback bundles). MLflow's bucket is the MLflow
# server's own: clients reach its artifacts through the server.
READABLE_BUCKETS = ("data",)
INSTALL_HINT = "run `sudo scripts/install-system-deps.sh` (installs Debian's swift packages)"

# Backend kinds and their offset from swift_backend_base_port.
BACKENDS = (("object", 0), ("container", 1), ("account", 2))

_CLEAN_ENV_KEYS = ("LANG", "LC_ALL", "TZ")

_PROXY_PIPELINE = (
    *("catch_errors", "gatekeeper", "healthcheck", "proxy-logging", "cache", "listing_formats"),
    *("s3api", "tempauth", "copy", "slo", "dlo", "proxy-logging", "proxy-server"),
)

# Proxy pipeline filters that need no options: pipeline name -> entry point name.
_PLAIN_FILTERS = {
    "catch_errors": "catch_errors",
    "gatekeeper": "gatekeeper",
    "healthcheck": "healthcheck",
    "proxy-logging": "proxy_logging",
    "listing_formats": "listing_formats",
    "copy": "copy",
    "slo": "slo",
    "dlo": "dlo",
}


@dataclass(frozen=True)
class SwiftServer:
    name: str  # the part name, e.g. "swift-object"
    kind: str  # object | container | account | proxy
    port: int
    conf: Path

    @property
    def binary(self) -> Path:
        return BIN_DIR / f"swift-{self.kind}-server"

    @property
    def healthcheck_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthcheck"

    def argv(self) -> list[str]:
        # -v sends Swift's log lines to stderr (our log file): without /dev/log they would go to
        # a UDP syslog nobody listens to.
        return [str(self.binary), str(self.conf), "-v"]


def swift_dir(state_dir: Path) -> Path:
    return state_dir / "swift"


def endpoint_url(settings: StackSettings) -> str:
    return f"http://127.0.0.1:{settings.swift_port}"


def servers(settings: StackSettings, state_dir: Path) -> list[SwiftServer]:
    base = swift_dir(state_dir)
    backends = [
        SwiftServer(
            name=f"swift-{kind}",
            kind=kind,
            port=settings.swift_backend_base_port + offset,
            conf=base / f"{kind}-server.conf",
        )
        for kind, offset in BACKENDS
    ]
    proxy = SwiftServer(
        name="swift-proxy", kind="proxy", port=settings.swift_port, conf=base / "proxy-server.conf"
    )
    return [*backends, proxy]


def clean_env(state_dir: Path) -> dict[str, str]:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    env["HOME"] = str(swift_dir(state_dir))
    env.update({k: os.environ[k] for k in _CLEAN_ENV_KEYS if k in os.environ})
    env.setdefault("LANG", "C.UTF-8")
    return env


def missing_binaries() -> list[str]:
    wanted = [BIN_DIR / "swift-ring-builder"] + [
        BIN_DIR / f"swift-{kind}-server" for kind in ("object", "container", "account", "proxy")
    ]
    missing = [str(p) for p in wanted if not os.access(p, os.X_OK)]
    if not SWIFT_CONF.is_file():
        missing.append(str(SWIFT_CONF))
    return missing


def check_installed() -> None:
    missing = missing_binaries()
    if missing:
        raise StackError(
            f"OpenStack Swift is not installed (missing {', '.join(missing)}): {INSTALL_HINT}"
        )


def _tempauth_users(settings: StackSettings) -> str:
    """The tempauth lines of the writer (the account's admin) and the reader (no group: it
    may do only what the buckets' ACLs grant it). S3 access key `account:user`, S3 secret =
    the Swift password."""
    writer = _tempauth_user("SWIFT", settings.swift_access_key, settings.swift_secret_key)
    reader = _tempauth_user(
        "SWIFT_READER", settings.swift_reader_access_key, settings.swift_reader_secret_key
    )
    writer_account = settings.swift_access_key.partition(":")[0]
    if settings.swift_reader_access_key.partition(":")[0] != writer_account:
        raise StackError(
            "CRIMES_STACK_SWIFT_READER_ACCESS_KEY must be a user of the writer's account "
            f"{writer_account!r}, got {settings.swift_reader_access_key!r}"
        )
    if settings.swift_reader_access_key == settings.swift_access_key:
        raise StackError("the Swift reader and writer must be different users")
    return f"{writer} .admin\n{reader}"


def _tempauth_user(setting: str, access_key: str, secret_key: SecretStr) -> str:
    account, sep, user = access_key.partition(":")
    if not sep or not all(re.fullmatch(r"[A-Za-z0-9_-]+", part) for part in (account, user)):
        raise StackError(
            f"CRIMES_STACK_{setting}_ACCESS_KEY must look like 'account:user' (letters, digits, "
            f"_ -), got {access_key!r}"
        )
    secret = secret_key.get_secret_value()
    if not secret or any(c.isspace() for c in secret):
        raise StackError(f"CRIMES_STACK_{setting}_SECRET_KEY must be non-empty without whitespace")
    return f"user_{account}_{user} = {secret}"


def _common(settings: StackSettings, state_dir: Path, port: int, name: str) -> str:
    base = swift_dir(state_dir)
    # Swift drops privileges to `user` at start-up: the current user keeps that a no-op.
    user = pwd.getpwuid(os.getuid()).pw_name
    return f"""[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 1
user = {user}
swift_dir = {base}
devices = {base / "node"}
mount_check = false
recon_cache_path = {base / "cache"}
log_name = {name}
log_level = INFO
"""


def _backend_conf(settings: StackSettings, state_dir: Path, server: SwiftServer) -> str:
    return (
        _common(settings, state_dir, server.port, server.name)
        + f"""
[pipeline:main]
pipeline = healthcheck {server.kind}-server

[app:{server.kind}-server]
use = egg:swift#{server.kind}

[filter:healthcheck]
use = egg:swift#healthcheck
"""
    )


def _proxy_conf(settings: StackSettings, state_dir: Path, server: SwiftServer) -> str:
    filter_sections = "".join(
        f"\n[filter:{section}]\nuse = egg:swift#{egg}\n" for section, egg in _PLAIN_FILTERS.items()
    )
    return (
        _common(settings, state_dir, server.port, server.name)
        + f"""
[pipeline:main]
pipeline = {" ".join(_PROXY_PIPELINE)}

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
location = {REGION}

[filter:tempauth]
use = egg:swift#tempauth
{_tempauth_users(settings)}

[filter:cache]
# tempauth refuses to work without a cache middleware; no memcached runs here, so it only
# caches in vain (connection refused is instant and error-limited by Swift). Its own logger
# keeps the resulting error line per request out of the proxy's log.
use = egg:swift#memcache
set log_name = {server.name}-cache
set log_level = CRITICAL
{filter_sections}"""
    )


def write_configs(settings: StackSettings, state_dir: Path) -> list[SwiftServer]:
    base = swift_dir(state_dir)
    for sub in ("node/d1", "cache"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    parts = servers(settings, state_dir)
    for server in parts:
        text = (
            _proxy_conf(settings, state_dir, server)
            if server.kind == "proxy"
            else _backend_conf(settings, state_dir, server)
        )
        server.conf.write_text(text)
        server.conf.chmod(0o600)  # holds the S3 secret
    return parts


def _ring_builder(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [str(BIN_DIR / "swift-ring-builder"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    # `rebalance` exits 1 with a warning on a one-device ring that is nonetheless balanced.
    if proc.returncode not in (0, 1):
        raise StackError(
            f"swift-ring-builder {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )


def _build_ring(kind: str, port: int, base: Path, env: dict[str, str]) -> None:
    builder = f"{kind}.builder"
    for stale in (base / builder, base / f"{kind}.ring.gz"):
        stale.unlink(missing_ok=True)
    _ring_builder([builder, "create", "8", "1", "1"], base, env)
    _ring_builder([builder, "add", f"r1z1-127.0.0.1:{port}/d1", "100"], base, env)
    _ring_builder([builder, "rebalance"], base, env)
    if not (base / f"{kind}.ring.gz").is_file():
        raise StackError(f"swift-ring-builder did not write {base / f'{kind}.ring.gz'}")


def build_rings(settings: StackSettings, state_dir: Path) -> None:
    """One-device, one-replica rings; rebuilt only when the backend ports changed."""
    base = swift_dir(state_dir)
    stamp = base / "rings.json"
    wanted = {kind: settings.swift_backend_base_port + offset for kind, offset in BACKENDS}
    rings_present = all((base / f"{kind}.ring.gz").is_file() for kind, _ in BACKENDS)
    if rings_present and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return
    env = clean_env(state_dir)
    # Nine ring-builder runs take ~3 s one after the other (each is a Python start-up); the three
    # rings are independent, so they are built side by side.
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        futures = [pool.submit(_build_ring, kind, port, base, env) for kind, port in wanted.items()]
        for future in futures:
            future.result()
    stamp.write_text(json.dumps(wanted))
    log.info("stack.swift_rings_built", swift_dir=str(base), ports=wanted)


def s3_client(settings: StackSettings) -> S3Client:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url(settings),
        aws_access_key_id=settings.swift_access_key,
        aws_secret_access_key=settings.swift_secret_key.get_secret_value(),
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=2,
            read_timeout=10,
            proxies={},
        ),
    )


def ensure_buckets(settings: StackSettings) -> list[str]:
    """Create the buckets that are missing; returns the names created."""
    from botocore.exceptions import ClientError

    client = s3_client(settings)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", []) if "Name" in b}
    created: list[str] = []
    for bucket in BUCKETS:
        if bucket in existing:
            continue
        try:
            client.create_bucket(Bucket=bucket)
            created.append(bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise
    if created:
        log.info("stack.swift_buckets_created", buckets=created)
    return created


# Swift's own in-process client (the one its daemons use), run on Debian's python3: it speaks to
# the cluster through a private proxy pipeline without the auth middleware. tempauth's own API
# would need memcached for its tokens, and S3's ACL calls cannot name a user in this mode.
_INTERNAL_CLIENT = """
import sys
from swift.common.internal_client import InternalClient
from swift.common.swob import Request

conf, account, reader, *containers = sys.argv[1:]
client = InternalClient(conf, "crimes-stack", 3)
for container in containers:
    # As the account's owner: a proxy drops ACL headers from anyone else's request.
    request = Request.blank(
        f"/v1/{account}/{container}",
        environ={"REQUEST_METHOD": "POST", "swift_owner": True},
        headers={"X-Container-Read": reader},
    )
    response = request.get_response(client.app)
    if response.status_int // 100 != 2:
        sys.exit(3)
"""


def _internal_client_conf(state_dir: Path) -> Path:
    base = swift_dir(state_dir)
    conf = base / "internal-client.conf"
    conf.write_text(
        f"""[DEFAULT]
swift_dir = {base}
user = {pwd.getpwuid(os.getuid()).pw_name}

[pipeline:main]
pipeline = catch_errors proxy-logging cache proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:cache]
use = egg:swift#memcache
set log_level = CRITICAL

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:catch_errors]
use = egg:swift#catch_errors
"""
    )
    return conf


def grant_reader(settings: StackSettings, state_dir: Path) -> None:
    """Give the reader read access (objects and listings) to the readable buckets and nothing
    else: their containers' read ACL names it (idempotent)."""
    account = "AUTH_" + settings.swift_access_key.partition(":")[0]
    proc = subprocess.run(
        [
            str(BIN_DIR / "python3"),
            "-c",
            _INTERNAL_CLIENT,
            str(_internal_client_conf(state_dir)),
            account,
            settings.swift_reader_access_key,
            *READABLE_BUCKETS,
        ],
        env=clean_env(state_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise StackError(f"could not grant the Swift reader its read ACL: {proc.stderr[-2000:]}")
