"""Attack surface: the gateway's connections. A client that sends its body a byte at a time
holds no in-flight slot and gets a 408 once the body timeout passes; one that sends its headers
a byte at a time has its connection closed once the header timeout passes; everyone else is
answered as usual meanwhile."""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Iterator

import httpx
import pytest

from crimes.gateway.schemas import EXAMPLE
from crimes.local.launch import LocalProcess
from tests.security.conftest import own_gateway

pytestmark = pytest.mark.e2e

SLOW_CLIENTS = 300
BODY_TIMEOUT = 3.0
HEADER_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def gateway(
    attacked: dict[str, LocalProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalProcess]:
    """A gateway of its own on the attacked model services, with a short body timeout and
    fewer slots in flight than there are slow clients."""
    folder = tmp_path_factory.mktemp("slow-clients")
    settings = {
        "CRIMES_GATEWAY_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "CRIMES_GATEWAY_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "CRIMES_GATEWAY_MAX_IN_FLIGHT": "256",
    }
    with own_gateway(attacked, folder, **settings) as gateway:
        yield gateway


def _latencies(client: httpx.Client, count: int) -> list[float]:
    body = {"features": EXAMPLE}
    times = []
    for _ in range(count):
        started = time.perf_counter()
        answer = client.post("/predict", json=body)
        assert answer.status_code == 200, answer.text
        times.append(time.perf_counter() - started)
    return times


def test_three_hundred_clients_sending_a_byte_at_a_time_hold_no_slot_and_get_408(
    gateway: LocalProcess,
) -> None:
    """Attack: 300 connections each announce a body and send one byte of it, then wait."""
    body = json.dumps({"features": EXAMPLE}).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {gateway.host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as client:
        quiet = statistics.median(_latencies(client, 60))
        slow = []
        try:
            for _ in range(SLOW_CLIENTS):
                connection = socket.create_connection((gateway.host, gateway.port), timeout=10)
                connection.sendall(head + body[:1])
                slow.append(connection)
            opened = time.monotonic()
            during = _latencies(client, 60)
            assert time.monotonic() - opened < BODY_TIMEOUT, "measured after the timeout: retune"
            assert statistics.median(during) <= 3 * quiet + 0.005, (quiet, during)
            answers = []
            for connection in slow:
                connection.settimeout(BODY_TIMEOUT + 10)
                answers.append(connection.recv(4096).split(b"\r\n", 1)[0])
        finally:
            for connection in slow:
                connection.close()
    assert set(answers) == {b"HTTP/1.1 408 Request Timeout"}, set(answers)
    with httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as client:
        assert client.post("/predict", json={"features": EXAMPLE}).status_code == 200


def _closed(connection: socket.socket) -> bool:
    """The gateway closed it: a byte more is refused, or the read says end of stream."""
    try:
        connection.send(b"a")
        connection.setblocking(False)
        return connection.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        connection.setblocking(True)


def test_clients_sending_their_headers_a_byte_at_a_time_are_cut_off(
    gateway: LocalProcess,
) -> None:
    """Attack: 300 connections each send the start of a request's headers, then one byte
    every half second, for ever (slowloris): each holds a descriptor of the gateway's."""
    head = f"POST /predict HTTP/1.1\r\nHost: {gateway.host}\r\nX-Padding: ".encode()
    slow = []
    try:
        for _ in range(SLOW_CLIENTS):
            connection = socket.create_connection((gateway.host, gateway.port), timeout=10)
            connection.sendall(head)
            slow.append(connection)
        opened = time.monotonic()
        open_at: dict[int, float] = {}
        with httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as client:
            while len(open_at) < len(slow) and time.monotonic() - opened < HEADER_TIMEOUT + 5:
                for index, connection in enumerate(slow):
                    if index not in open_at and _closed(connection):
                        open_at[index] = time.monotonic() - opened
                answer = client.post("/predict", json={"features": EXAMPLE})
                assert answer.status_code == 200  # everyone else is served meanwhile
                time.sleep(0.5)
    finally:
        for connection in slow:
            connection.close()
    assert len(open_at) == SLOW_CLIENTS, f"{SLOW_CLIENTS - len(open_at)} still open"
    assert min(open_at.values()) >= HEADER_TIMEOUT - 1, sorted(open_at.values())[:5]
