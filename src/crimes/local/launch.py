"""The one launcher of the system's programs as local processes, for the tests and benchmarks:
`crimes serve dtc|lda|gateway` (or any command) on free ports, its output in a log file, ready
when its health check says so, stopped with a signal.

The demo uses `stack.procs.launch` instead: its processes must outlive the demo's own process
(a new session, a pid record) so that `make down` can stop them later.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from crimes.local.stack import free_port, prediction_log_only, read_only
from crimes.ops.probe import grpc_serving, http_ok
from crimes.ops.tls import ClientTls
from crimes.registry import MODELS

CRIMES = str(Path(sys.executable).parent / "crimes")
TICKS = os.sysconf("SC_CLK_TCK")

# The model service deployments and the registered model each serves (a challenger deployment
# serves its model's `challenger` alias).
SERVED = {**MODELS, **{f"{kind}-challenger": name for kind, name in MODELS.items()}}

P = TypeVar("P", bound="LocalProcess")


@dataclass
class LocalProcess:
    """A program of the system running as a local process: `kind` is dtc, lda, gateway, or
    any other name (then only liveness of the process itself is known)."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int | None = None
    # The address it listens on (a model service may be told another loopback address).
    host: str = "127.0.0.1"
    # How a model service with TLS on is probed.
    tls: ClientTls | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def healthy(self) -> bool:
        if self.kind in SERVED:
            return grpc_serving(self.address, SERVED[self.kind], timeout=1.0, tls=self.tls)[0]
        return http_ok(f"{self.url}/health/live")[0]

    def alive(self) -> None:
        """Raise, with the end of its log, if the process has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.kind} exited {self.process.returncode}:\n{self.tail()}")

    def live(self) -> bool:
        """Up and answering, ready or not (a model service without a version is live)."""
        if self.kind in SERVED:
            return grpc_serving(self.address, "liveness", timeout=1.0, tls=self.tls)[0]
        return http_ok(f"{self.url}/health/live")[0]

    def wait_healthy(self, timeout: float = 90.0, *, ready: bool = True) -> None:
        """Until it is ready (`ready`), or only live."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive()
            if self.healthy() if ready else self.live():
                return
            time.sleep(0.2)
        what = "healthy" if ready else "live"
        raise TimeoutError(f"{self.kind} not {what} in {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def logs(self) -> list[dict[str, Any]]:
        """The structured log entries written so far."""
        entries = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return entries

    def wait_for_log(self, event: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.logs():
                if entry.get("event") == event and all(
                    entry.get(k) == v for k, v in fields.items()
                ):
                    return entry
            time.sleep(0.1)
        raise AssertionError(f"no {event} {fields} in the log of {self.kind}:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / TICKS

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the process and wait (killing it past the timeout); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def start(
    cls: type[P],
    kind: str,
    argv: Sequence[str],
    port: int,
    folder: Path,
    env: dict[str, str],
    **fields: Any,
) -> P:
    """Run `argv` with `env` over this process's environment, its output in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{kind}-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv), env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    return cls(kind=kind, port=port, process=process, log=log, **fields)


def serve(
    cls: type[P],
    kind: str,
    env: dict[str, str],
    folder: Path,
    port: int | None = None,
    *extra: str,
    runner: Sequence[str] = (),
    **fields: Any,
) -> P:
    """`crimes serve <kind>` on a free port (unless given), and a free metrics port: model
    services also get their own local model copy folder (unless `env` names one), and the
    object store's reader credentials instead of the writer's (as in compose). `runner`: a
    command that runs it (a profiler, say), given the interpreter and the script."""
    port = port or free_port()
    argv = [*runner, CRIMES, "serve", kind, "--port", str(port)]
    service_env = dict(env)
    if kind == "gateway":
        # The local tooling runs on one machine: a gateway without a key is its to allow.
        service_env.setdefault("CRIMES_GATEWAY_ALLOW_NO_API_KEY", "true")
        # Prometheus' own port, as in every deployment: a free one.
        service_env.setdefault("CRIMES_GATEWAY_METRICS_PORT", str(free_port()))
        given = service_env["CRIMES_GATEWAY_METRICS_PORT"]  # empty: on the API's port
        fields.setdefault("metrics_port", int(given) if given else None)
        # Its prediction log's spill folder: its own, beside its output; the object store's
        # prediction log credentials instead of the writer's (as in compose).
        service_env.setdefault(
            "CRIMES_PREDICTION_LOG_SPILL_DIR", str(folder / f"gateway-{port}-spill")
        )
        service_env = prediction_log_only({**os.environ, **service_env})
    if kind in SERVED:
        metrics_port = free_port()
        argv += ["--metrics-port", str(metrics_port)]
        service_env.setdefault("CRIMES_MODEL_LOCAL_DIR", str(folder / f"{kind}-{port}"))
        service_env = read_only({**os.environ, **service_env})
        fields.setdefault("metrics_port", metrics_port)
    return start(cls, kind, [*argv, *extra], port, folder, service_env, **fields)


@contextmanager
def serving(
    kind: str, env: dict[str, str], folder: Path, port: int | None = None
) -> Iterator[LocalProcess]:
    """`crimes serve <kind>`, healthy, for the length of the block."""
    service = serve(LocalProcess, kind, env, folder, port)
    try:
        service.wait_healthy()
        yield service
    finally:
        service.stop()
