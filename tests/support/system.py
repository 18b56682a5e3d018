"""The serving system as end-to-end tests run it: model services (`crimes serve <kind>`), then
the gateway pointed at them, every process real, on free ports, stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from crimes.local import launch
from crimes.local.launch import LocalProcess
from crimes.settings import TrackingSettings


def gateway_env(started: dict[str, LocalProcess], **settings: str) -> dict[str, str]:
    """The gateway's settings for the started model services (and challengers, if any)."""
    env = {"CRIMES_GATEWAY_TRACKING_URI": TrackingSettings().tracking_uri}
    for deployment, process in started.items():
        name = deployment.replace("-", "_").upper()
        env[f"CRIMES_GATEWAY_{name}_ADDRESS"] = f"dns:///{process.address}"
    return {**env, **settings}


@contextmanager
def serving_system(
    folder: Path,
    deployments: Sequence[str] = ("dtc", "lda"),
    env: dict[str, str] | None = None,
    gateway: dict[str, str] | None = None,
    waiting: Sequence[str] = (),
) -> Iterator[dict[str, LocalProcess]]:
    """The model deployments, healthy (those `waiting` for a version: live), then the gateway
    (its own settings: `gateway`; both get `env`), healthy, as {deployment: process,
    "gateway": process}."""
    started: dict[str, LocalProcess] = {}
    try:
        for deployment in deployments:
            started[deployment] = launch.serve(LocalProcess, deployment, dict(env or {}), folder)
        for deployment, service in started.items():
            service.wait_healthy(ready=deployment not in waiting)
        settings = gateway_env(started, **(env or {}), **(gateway or {}))
        started["gateway"] = launch.serve(LocalProcess, "gateway", settings, folder)
        started["gateway"].wait_healthy()
        yield started
    finally:
        for process in started.values():
            process.stop()
