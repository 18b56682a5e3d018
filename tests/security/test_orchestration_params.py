"""Attack surface: what an Airflow run's conf can make the tasks do. A conf that names a URL
must not make a task fetch it (request forgery from inside the deployment)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from crimes.local.stack import free_port
from crimes.orchestration import monitoring, tasks


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server standing for an internal address an attacker wants fetched."""
    hits: list[str] = []

    class Record(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Record)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()


def test_monitor_drift_reads_only_the_configured_gateway(
    elsewhere: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: trigger monitor_drift with conf {"gateway_url": "http://internal-host/"}."""
    url, hits = elsewhere
    configured = f"http://127.0.0.1:{free_port()}"  # nothing listens: the task fails there
    monkeypatch.setenv("CRIMES_MONITOR_GATEWAY_URL", configured)
    with pytest.raises(monitoring.GatewayUnreachable, match=configured):
        tasks.check_drift({"gateway_url": url, "drift_threshold": None}, 0, "manual__attack")
    assert hits == []
