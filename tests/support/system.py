"""The serving system as end-to-end tests run it: model services (`crimes serve <kind>`), then
the gateway pointed at them, every process real, on free ports, stopped at the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from crimes.gateway import replicas
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


def listed_models(
    http: httpx.Client,
    until: Callable[[dict[str, Any]], bool] = lambda _: True,
    timeout: float = 30,
) -> dict[str, Any]:
    """The gateway's /models once `until` holds: it answers from its view of the replicas,
    refreshed in the background (every CRIMES_GATEWAY_REFRESH_SECONDS while one is not ready)."""
    deadline = time.monotonic() + timeout
    while not until(listed := http.get("/models").json()):
        assert time.monotonic() < deadline, listed
        time.sleep(0.5)
    return dict(listed)


def every_replica_ready(listed: dict[str, Any]) -> bool:
    """`/models` lists replicas for every model, all of them ready."""
    return replicas.every_replica_ready({kind: info["replicas"] for kind, info in listed.items()})


def gateway_metrics(gateway: LocalProcess) -> str:
    """The gateway's Prometheus text, from its own metrics port (as Prometheus scrapes it)."""
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    return httpx.get(url, timeout=10, trust_env=False).text


def wait_ready(http: httpx.Client, timeout: float = 60) -> None:
    """Until the gateway says ready (a model service ready, its transformation fetched)."""
    deadline = time.monotonic() + timeout
    while (answer := http.get("/health/ready")).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)
