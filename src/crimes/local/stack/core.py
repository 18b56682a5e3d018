"""up / down / status / env_exports of the local stack."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import random
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from crimes.lake.object_store import LAKE_BUCKET, REGION, ensure_buckets
from crimes.local.settings import StackSettings
from crimes.local.stack import backend, mlflow_server, seaweedfs
from crimes.local.stack.procs import (
    PidStore,
    ProcessRecord,
    StackError,
    exit_code,
    is_alive,
    launch,
    log_tail,
    owned_processes,
    stop,
    wait_until,
)
from crimes.ops.logs import get_logger

log = get_logger("crimes.local.stack")

STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class PartStatus:
    name: str
    address: str
    pid: int | None
    healthy: bool
    detail: str


@dataclass(frozen=True)
class _ProcessPart:
    """A part of the stack that is a process of ours, with how to start and probe it."""

    name: str
    address: str
    health_url: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path


def _resolve(settings: StackSettings | None) -> tuple[StackSettings, Path]:
    settings = settings or StackSettings()
    return settings, settings.state_dir.expanduser().resolve()


def _store(state_dir: Path) -> PidStore:
    return PidStore(state_dir / "pids")


@contextlib.contextmanager
def _exclusive(state_dir: Path) -> Iterator[None]:
    """One `up`/`down` at a time per state dir (two shells, or parallel tests, may race)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "stack.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _log_path(state_dir: Path, name: str) -> Path:
    return state_dir / "logs" / f"{name}.log"


def lake_root(settings: StackSettings, state_dir: Path) -> str:
    if settings.object_store == "seaweedfs":
        return f"s3://{LAKE_BUCKET}"
    return f"file://{state_dir / 'lake' / 'data'}"


def _process_parts(settings: StackSettings, state_dir: Path) -> list[_ProcessPart]:
    parts: list[_ProcessPart] = []
    if settings.object_store == "seaweedfs":
        parts.append(
            _ProcessPart(
                name=seaweedfs.NAME,
                address=seaweedfs.endpoint_url(settings),
                health_url=seaweedfs.health_url(settings),
                argv=seaweedfs.argv(settings, state_dir),
                env=seaweedfs.clean_env(state_dir),
                cwd=seaweedfs.folder(state_dir),
            )
        )
    parts.append(
        _ProcessPart(
            name=mlflow_server.NAME,
            address=mlflow_server.tracking_uri(settings),
            health_url=mlflow_server.health_url(settings),
            argv=mlflow_server.argv(settings, state_dir),
            env=mlflow_server.environment(settings),
            cwd=state_dir / "mlflow",
        )
    )
    return parts


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        # trust_env=False: a proxy configured for the registries must not see loopback probes.
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int) -> int:
    """The first of `count` consecutive ports free on 127.0.0.1 (SeaweedFS' internal servers
    take a block)."""
    for _ in range(200):
        base = random.randrange(20_000, 30_000)
        if not any(_port_in_use(base + i) for i in range(count)):
            return base
    raise StackError(f"no block of {count} free ports found")


def _ports_of(part: _ProcessPart, settings: StackSettings) -> list[int]:
    ports = [int(part.address.rsplit(":", 1)[1])]
    if part.name == seaweedfs.NAME:
        base = settings.seaweedfs_internal_base_port
        ports += range(base, base + len(seaweedfs.INTERNAL_PORT_FLAGS))
    return ports


def _failure(part: _ProcessPart, record: ProcessRecord, what: str) -> StackError:
    return StackError(
        f"{part.name} {what}; log {record.log_path}, last lines:\n{log_tail(record.log_path)}"
    )


def _exited(record: ProcessRecord) -> Callable[[], str | None]:
    def check() -> str | None:
        if is_alive(record.pid):
            return None
        code = exit_code(record)
        return (
            f"{record.name} exited (code {code}) before it was healthy; log {record.log_path}, "
            f"last lines:\n{log_tail(record.log_path)}"
        )

    return check


def _prepare_folder_lake(state_dir: Path) -> None:
    for sub in ("data", "mlflow"):
        (state_dir / "lake" / sub).mkdir(parents=True, exist_ok=True)


def _wait_healthy(
    part: _ProcessPart, record: ProcessRecord, deadline: float, timeout: float
) -> None:
    if not wait_until(lambda: _http_ok(part.health_url), deadline=deadline, failed=_exited(record)):
        raise _failure(part, record, f"not healthy at {part.health_url} after {timeout:.0f} s")


def up(settings: StackSettings | None = None) -> list[PartStatus]:
    """Start every part that is not running and wait until all are healthy.

    Parts already running (recorded in the pid files and still ours) are reused. When a part
    fails, the processes this call started are stopped again and StackError carries the reason
    and the tail of the failing part's log.
    """
    settings, state_dir = _resolve(settings)
    with _exclusive(state_dir):
        _up(settings, state_dir)
    return status(settings)


def _up(settings: StackSettings, state_dir: Path) -> None:
    started_at = time.monotonic()
    deadline = started_at + settings.start_timeout_seconds
    store = _store(state_dir)
    for sub in ("logs", "pids", "mlflow"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)

    if settings.object_store == "seaweedfs":
        seaweedfs.prepare(settings, state_dir)
    else:
        _prepare_folder_lake(state_dir)
    if settings.postgres_url:
        backend.ensure_database(settings)

    parts = _process_parts(settings, state_dir)
    running = {p.name: store.running(p.name) for p in parts}
    to_start = [p for p in parts if running[p.name] is None]
    for part in to_start:
        # A leftover of ours (leader dead, a child alive) would hold the port: clear it first.
        leftover = store.read(part.name)
        if leftover is not None and owned_processes(leftover):
            stop([leftover], STOP_GRACE_SECONDS)
        store.remove(part.name)
        for port in _ports_of(part, settings):
            if _port_in_use(port):
                raise StackError(
                    f"port {port} for {part.name} is in use by a process this stack did not "
                    f"start (see `ss -ltnp 'sport = :{port}'`); stop it or choose another port "
                    "with the CRIMES_STACK_* settings"
                )

    records = {name: rec for name, rec in running.items() if rec is not None}
    launched: list[ProcessRecord] = []
    try:
        # Everything is launched before anything is awaited, MLflow first: it needs the object
        # store only when artifacts move, so its ~8 s start-up overlaps SeaweedFS' ~1 s.
        for part in sorted(to_start, key=lambda p: p.name != mlflow_server.NAME):
            record = launch(
                part.name,
                part.argv,
                env=part.env,
                log_path=_log_path(state_dir, part.name),
                cwd=part.cwd,
                address=part.address,
                store=store,
            )
            records[part.name] = record
            launched.append(record)
        for part in parts:
            _wait_healthy(part, records[part.name], deadline, settings.start_timeout_seconds)
            if part.name == seaweedfs.NAME:
                _ensure_buckets_until(settings, deadline)
    except BaseException:
        if launched:
            log.warning("stack.up_failed_stopping", parts=[r.name for r in launched])
            with contextlib.suppress(StackError):
                stop(launched, STOP_GRACE_SECONDS)
            for record in launched:
                store.remove(record.name)
        raise
    log.info(
        "stack.up",
        started=[p.name for p in to_start],
        reused=[name for name, rec in running.items() if rec is not None],
        seconds=round(time.monotonic() - started_at, 2),
    )


def _ensure_buckets_until(settings: StackSettings, deadline: float) -> None:
    """Create the buckets as the admin identity, retrying while the filer settles."""
    last: list[Exception] = []

    def attempt() -> bool:
        try:
            ensure_buckets(seaweedfs.endpoint_url(settings), seaweedfs.identities(settings))
        except Exception as exc:
            last[:] = [exc]
            return False
        return True

    if not wait_until(attempt, deadline=deadline, interval=0.2):
        raise StackError(f"could not create the object store's buckets: {last[0]!r}")


def down(settings: StackSettings | None = None) -> list[str]:
    """Stop what `up` started (SIGTERM, then SIGKILL after a grace); returns the names stopped."""
    settings, state_dir = _resolve(settings)
    with _exclusive(state_dir):
        return _down(state_dir)


def _down(state_dir: Path) -> list[str]:
    store = _store(state_dir)
    # Every recorded part, not only those of the current settings: a part started with another
    # object_store must not be orphaned. MLflow first, it uses the object store.
    names = store.names()
    ordered = sorted(names, key=lambda n: (n != mlflow_server.NAME, n))
    records = [rec for name in ordered if (rec := store.read(name)) is not None]
    stopped = stop(records, STOP_GRACE_SECONDS)
    for record in records:
        if not owned_processes(record):
            store.remove(record.name)
    log.info("stack.down", stopped=stopped)
    return stopped


def status(settings: StackSettings | None = None) -> list[PartStatus]:
    """The health of every part; never starts or stops anything."""
    settings, state_dir = _resolve(settings)
    store = _store(state_dir)
    result: list[PartStatus] = []
    if settings.object_store == "folder":
        lake = state_dir / "lake"
        present = all((lake / sub).is_dir() for sub in ("data", "mlflow"))
        result.append(
            PartStatus(
                name="lake",
                address=lake_root(settings, state_dir),
                pid=None,
                healthy=present,
                detail="folders present" if present else "folders missing (run `up`)",
            )
        )
    for part in _process_parts(settings, state_dir):
        record = store.running(part.name)
        if record is None:
            result.append(PartStatus(part.name, part.address, None, False, "not running"))
            continue
        healthy = _http_ok(part.health_url)
        detail = f"healthy ({part.health_url})" if healthy else f"running, {part.health_url} not OK"
        result.append(PartStatus(part.name, record.address, record.pid, healthy, detail))
    healthy, detail = backend.health(settings, state_dir)
    result.append(
        PartStatus(
            name=backend.part_name(settings),
            address=backend.address(settings, state_dir),
            pid=None,
            healthy=healthy,
            detail=detail,
        )
    )
    return result


# The reader's credentials in a client's environment (model services run with them), and the
# prediction log's (the gateway).
READER_ACCESS_KEY = "CRIMES_STACK_LAKE_READER_ACCESS_KEY_ID"
READER_SECRET_KEY = "CRIMES_STACK_LAKE_READER_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name
LOG_ACCESS_KEY = "CRIMES_STACK_PREDICTION_LOG_ACCESS_KEY_ID"
LOG_SECRET_KEY = "CRIMES_STACK_PREDICTION_LOG_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name


def _as(env: Mapping[str, str], access: str, secret: str) -> dict[str, str]:
    if access not in env:
        return dict(env)
    return {**env, "AWS_ACCESS_KEY_ID": env[access], "AWS_SECRET_ACCESS_KEY": env[secret]}


def read_only(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the object-store reader's credentials in place of the writer's, when the
    stack gave a reader (SeaweedFS); unchanged otherwise (a folder lake has no credentials)."""
    return _as(env, READER_ACCESS_KEY, READER_SECRET_KEY)


def prediction_log_only(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the prediction log's credentials (the gateway's) in place of the writer's."""
    return _as(env, LOG_ACCESS_KEY, LOG_SECRET_KEY)


def env_exports(settings: StackSettings | None = None) -> dict[str, str]:
    """Environment a client of the stack needs (the data lake, MLflow, S3 credentials)."""
    settings, state_dir = _resolve(settings)
    uri = mlflow_server.tracking_uri(settings)
    env = {
        "MLFLOW_TRACKING_URI": uri,
        "CRIMES_MLFLOW_TRACKING_URI": uri,
        "CRIMES_LAKE_ROOT": lake_root(settings, state_dir),
    }
    if settings.object_store == "seaweedfs":
        endpoint = seaweedfs.endpoint_url(settings)
        env |= {
            "CRIMES_LAKE_S3_ENDPOINT_URL": endpoint,
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": settings.lake_writer_access_key,
            "AWS_SECRET_ACCESS_KEY": settings.lake_writer_secret_key.get_secret_value(),
            "AWS_DEFAULT_REGION": REGION,
            # What a model service gets instead (crimes.local.launch): read-only on the lake.
            READER_ACCESS_KEY: settings.lake_reader_access_key,
            READER_SECRET_KEY: settings.lake_reader_secret_key.get_secret_value(),
            # What a gateway gets: adding to the prediction log, reading the evaluation.
            LOG_ACCESS_KEY: settings.prediction_log_access_key,
            LOG_SECRET_KEY: settings.prediction_log_secret_key.get_secret_value(),
        }
    return env
