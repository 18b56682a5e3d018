"""Attack surface: the routes beside the predictions. Anyone who reaches the gateway could list
the internal addresses and versions (/models, /health/ready), read the drift report, the
metrics and the docs, and make the gateway ask every replica twice per /models call, outside
the in-flight bound. Now: every route but the two health probes needs the key; readiness says
one word; /models answers from the view the gateway keeps (refreshed in the background); the
metrics can have a port of their own and the docs can be off."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from crimes.local.launch import LocalProcess
from crimes.local.stack import free_port
from tests.security.conftest import own_gateway
from tests.support.system import every_replica_ready, listed_models, wait_ready

KEY = "side-routes-key"
CRIMES = str(Path(sys.executable).with_name("crimes"))
SIDE_ROUTES = ("/", "/models", "/drift", "/metrics", "/docs", "/redoc", "/openapi.json")
# /metrics on the API's port: only where the deployment gives Prometheus no port of its own.
ON_THE_API_PORT = {"CRIMES_GATEWAY_METRICS_PORT": ""}


def _metadata_calls(service: LocalProcess) -> float:
    """ModelMetadata calls a model service answered (its own Prometheus counter)."""
    text = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", trust_env=False).text
    pattern = r'^crimes_model_requests_total\{[^}]*method="ModelMetadata"[^}]*\} (\S+)'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def test_every_route_but_the_probes_needs_the_key(
    attacked: dict[str, LocalProcess], tmp_path: Path
) -> None:
    """Attack: read the side routes of a keyed gateway without its key."""
    settings = {"CRIMES_GATEWAY_API_KEY": KEY, **ON_THE_API_PORT}
    with (
        own_gateway(attacked, tmp_path, **settings) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as http,
    ):
        for path in SIDE_ROUTES:
            assert http.get(path).status_code == 401, path
            assert http.get(path, headers={"X-API-Key": "wrong"}).status_code == 401, path
            assert http.get(path, headers={"X-API-Key": KEY}).status_code == 200, path
        assert http.get("/health/live").status_code == 200
        wait_ready(http)
        # One word, never an address or a version of what serves.
        assert http.get("/health/ready").json() == {"status": "ready"}
        schema = http.get("/openapi.json", headers={"X-API-Key": KEY}).json()
        assert schema["paths"]["/models"]["get"]["security"] == [{"ApiKey": []}]
        assert "security" not in schema["paths"]["/health/ready"]["get"]


def test_readiness_says_why_not_in_one_word(tmp_path: Path) -> None:
    """A gateway whose model services are not there: not ready, and the one-word reason."""
    nowhere = f"ipv4:127.0.0.1:{free_port()}"
    settings = {
        "CRIMES_GATEWAY_DTC_ADDRESS": nowhere,
        "CRIMES_GATEWAY_LDA_ADDRESS": nowhere,
        "CRIMES_GATEWAY_ALLOW_NO_API_KEY": "true",
    }
    from crimes.local import launch

    gateway = launch.serve(LocalProcess, "gateway", settings, tmp_path)
    try:
        gateway.wait_healthy()
        ready = httpx.get(f"{gateway.url}/health/ready", trust_env=False)
        assert ready.status_code == 503
        assert ready.json() == {"status": "not ready", "reason": "no_model_service"}
    finally:
        gateway.stop()


def test_models_costs_the_replicas_nothing_per_call(
    attacked: dict[str, LocalProcess], tmp_path: Path
) -> None:
    """Attack: call /models in a loop. Before, each call resolved the name and made two RPCs
    per replica (400 ModelMetadata calls for 200 requests); now the replicas see only the
    gateway's own background refreshes."""
    with (
        own_gateway(attacked, tmp_path) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as http,
    ):
        listed = listed_models(http, every_replica_ready)
        before = _metadata_calls(attacked["dtc"])
        for _ in range(200):
            assert http.get("/models").json()["dtc"]["replicas"] == listed["dtc"]["replicas"]
        after = _metadata_calls(attacked["dtc"])
    # The background refreshes of this gateway and of the shared one, a few seconds' worth.
    assert after - before < 40, (before, after)


def test_metrics_on_their_own_port_and_docs_off(
    attacked: dict[str, LocalProcess], tmp_path: Path
) -> None:
    """The production settings: Prometheus scrapes a port of its own (the API's has no
    /metrics, whatever the key), and no docs are served."""
    port = free_port()
    with own_gateway(
        attacked,
        tmp_path,
        CRIMES_GATEWAY_API_KEY=KEY,
        CRIMES_GATEWAY_METRICS_PORT=str(port),
        CRIMES_GATEWAY_DOCS="false",
    ) as gateway:
        keyed = {"X-API-Key": KEY}
        with httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as http:
            http.post("/predict", json={"features": {}}, headers=keyed)
            for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
                assert http.get(path, headers=keyed).status_code == 404, path
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False)
        assert scraped.status_code == 200
        assert 'crimes_gateway_requests_total{route="/predict",status="422"}' in scraped.text


def _crimes_drift(gateway: LocalProcess, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRIMES_MONITOR_")}
    return subprocess.run(
        [CRIMES, "drift", "--gateway", gateway.url],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_monitor_reads_the_reports_with_its_key(
    attacked: dict[str, LocalProcess], tmp_path: Path
) -> None:
    """`crimes drift` (the monitor_drift DAG's reading) sends the monitor's key; without it,
    one line and a non-zero exit, never a traceback."""
    with own_gateway(attacked, tmp_path, CRIMES_GATEWAY_API_KEY=KEY) as gateway:
        keyless = _crimes_drift(gateway)
        keyed = _crimes_drift(gateway, CRIMES_MONITOR_GATEWAY_API_KEY=KEY)
    assert keyless.returncode == 1, keyless.stderr
    assert "401" in keyless.stderr, keyless.stderr
    assert keyless.stderr.count("\n") == 1, keyless.stderr
    assert "Traceback" not in keyless.stderr
    assert keyed.returncode == 0, keyed.stderr
