"""Real service processes for end-to-end tests: `crimes serve dtc|lda|gateway` on free ports,
started with the stack's environment, ready when their health check says so. The one launcher
of the test suite (the model service tests' `ServiceProcess` builds on it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from crimes.local import stack
from crimes.ops.probe import grpc_serving, http_ok
from crimes.registry import MODELS

CRIMES = str(Path(sys.executable).parent / "crimes")

S = TypeVar("S", bound="Service")


@dataclass
class Service:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        if self.kind == "gateway":
            return http_ok(f"{self.url}/health/live")[0]
        return grpc_serving(self.address, MODELS[self.kind], timeout=1.0)[0]

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited {self.process.returncode}:\n{self.tail()}")
            if self.healthy():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.kind} not healthy in {timeout} s:\n{self.tail()}")

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


def launch(
    cls: type[S],
    kind: str,
    env: dict[str, str],
    folder: Path,
    port: int | None = None,
    *extra: str,
    **fields: Any,
) -> S:
    """`crimes serve <kind>` as a `cls` (given `fields`): model services get a metrics port and
    their own local model copy folder (unless `env` names one)."""
    port = port or stack.free_port()
    args = [CRIMES, "serve", kind, "--port", str(port)]
    service_env = {**os.environ, **env}
    metrics_port = None
    if kind != "gateway":
        metrics_port = stack.free_port()
        args += ["--metrics-port", str(metrics_port)]
        service_env.setdefault("CRIMES_MODEL_LOCAL_DIR", str(folder / f"{kind}-{port}"))
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{kind}-{port}.log"
    process = subprocess.Popen(
        [*args, *extra], env=service_env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    return cls(kind=kind, port=port, process=process, log=log, metrics_port=metrics_port, **fields)


def start(
    kind: str, env: dict[str, str], folder: Path, port: int | None = None, *extra: str
) -> Service:
    return launch(Service, kind, env, folder, port, *extra)


@contextmanager
def running(
    kind: str, env: dict[str, str], folder: Path, port: int | None = None
) -> Iterator[Service]:
    service = start(kind, env, folder, port)
    try:
        service.wait_healthy()
        yield service
    finally:
        service.stop()
