"""Replicas join and leave a running gateway, found through real DNS: a DNS server of the test
answers `dtc.test` with model services on 127.0.0.2, .3 (.4 later), each a real `crimes serve
dtc` on the same port, as pods behind a headless Service. The model services close every
connection after their max connection age, so the gateway resolves the name again: a replica
added to the answer gets traffic within the bound, and one removed from it and stopped with
SIGTERM under steady load costs no request. `/models` lists the replicas the name gives."""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from crimes.gateway.schemas import EXAMPLE
from crimes.local import launch
from crimes.local.launch import LocalProcess
from crimes.local.stack import free_port
from crimes.settings import TrackingSettings
from tests.support.dns import dns_server
from tests.support.system import listed_models

pytestmark = pytest.mark.e2e

# The model services' max connection age here (the default is 20 s): the bound within which
# the gateway sees a change is this (+10% jitter), the grace, and one resolution.
MAX_AGE_SECONDS = 4.0
BOUND_SECONDS = 3 * MAX_AGE_SECONDS
NAME = "dtc.test"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def infer_count(service: LocalProcess) -> float:
    url = f"http://{service.host}:{service.metrics_port}/metrics"
    text = httpx.get(url, timeout=5, trust_env=False).text
    pattern = r'^crimes_model_requests_total\{[^}]*method="ModelInfer"[^}]*\} (\S+)'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def _addresses(listed: dict[str, Any]) -> list[str]:
    return sorted(r["address"] for r in listed["dtc"]["replicas"])


def within(seconds: float, check: Callable[[], bool], what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {seconds:.0f} s")


def test_replicas_join_and_leave_a_running_gateway(trained: dict[str, Any], tmp_path: Path) -> None:
    port = free_port()
    age = {
        "CRIMES_MODEL_MAX_CONNECTION_AGE_SECONDS": str(MAX_AGE_SECONDS),
        "CRIMES_MODEL_MAX_CONNECTION_AGE_GRACE_SECONDS": "2",
    }
    started: list[LocalProcess] = []
    threads: list[threading.Thread] = []
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()
    with dns_server() as (zone, dns_port):
        zone.answer(NAME, list(HOSTS[:2]))
        try:
            dtc = {}
            for host in HOSTS:
                env = {**age, "CRIMES_MODEL_HOST": host}
                dtc[host] = launch.serve(LocalProcess, "dtc", env, tmp_path, port, host=host)
                started.append(dtc[host])
            lda = launch.serve(LocalProcess, "lda", age, tmp_path)
            started.append(lda)
            for service in started:
                service.wait_healthy()
            target = f"dns://127.0.0.1:{dns_port}/{NAME}:{port}"
            gateway = launch.serve(
                LocalProcess,
                "gateway",
                {
                    "CRIMES_GATEWAY_DTC_ADDRESS": target,
                    "CRIMES_GATEWAY_LDA_ADDRESS": f"dns:///{lda.address}",
                    "CRIMES_GATEWAY_TRACKING_URI": TrackingSettings().tracking_uri,
                    # /models' view of the replicas, refreshed within the test's bound.
                    "CRIMES_GATEWAY_MODELS_REFRESH_SECONDS": "1",
                },
                tmp_path,
            )
            started.append(gateway)
            gateway.wait_healthy()
            http = httpx.Client(base_url=gateway.url, timeout=10, trust_env=False)
            within(60, lambda: http.post("/predict", json={"features": EXAMPLE}).status_code
                   == 200, "the first answer")  # fmt: skip

            def load() -> None:
                with httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as client:
                    while not stop.is_set():
                        response = client.post("/predict", json={"features": EXAMPLE})
                        body = response.json()
                        if response.status_code != 200 or None in body.values():
                            # With the gateway's reason: the cause, when this happens.
                            reason = response.headers.get("X-Partial-Failure", "")
                            failures.append(f"{response.status_code} {body} {reason}")
                        answered[0] += 1

            threads.extend(threading.Thread(target=load) for _ in range(3))
            for thread in threads:
                thread.start()

            # The two replicas the name gives share the load.
            within(BOUND_SECONDS, lambda: all(infer_count(dtc[h]) > 0 for h in HOSTS[:2]),
                   "both first replicas serving")  # fmt: skip
            assert infer_count(dtc[HOSTS[2]]) == 0  # not in the answer: no traffic

            # A third address in the answer: its own counter rises within the bound.
            zone.answer(NAME, list(HOSTS))
            joined = within(BOUND_SECONDS, lambda: infer_count(dtc[HOSTS[2]]) > 0,
                            "the third replica serving")  # fmt: skip
            every_host = [f"{h}:{port}" for h in HOSTS]
            listed_models(http, lambda m: _addresses(m) == every_host, timeout=BOUND_SECONDS)

            # The first address leaves the answer and its service stops (SIGTERM) under load.
            zone.answer(NAME, list(HOSTS[1:]))
            removed = dtc[HOSTS[0]]
            assert removed.stop(signal.SIGTERM) == 0
            before = {h: infer_count(dtc[h]) for h in HOSTS[1:]}
            time.sleep(MAX_AGE_SECONDS)
            assert all(infer_count(dtc[h]) > before[h] for h in HOSTS[1:])
            remaining = [f"{h}:{port}" for h in HOSTS[1:]]
            listed_models(http, lambda m: _addresses(m) == remaining, timeout=BOUND_SECONDS)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            for service in started:
                service.stop()
    assert failures == [], failures[:5]
    assert answered[0] > 100
    print(f"the third replica served {joined:.1f} s after it joined the answer; "
          f"{answered[0]} requests, none failed")  # fmt: skip
