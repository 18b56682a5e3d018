"""Single requests at concurrency 1 to several gateways at once, interleaved: the fair A/B of
a latency on a shared machine.

Run one after the other, two gateways' c=1 figures differ by more than their code does: this
machine's speed drifts by tens of percent within a minute (other tenants' load). Here one
closed loop sends each body to every gateway in turn (in an order shuffled anew for every
body, so that no gateway always follows the same one), so each system's latencies come from
the same seconds of the machine. The client is a plain socket writing prepared requests and
reading each answer whole (no HTTP library in the measured path: its cost would only blur the
difference). It runs on the same cores as the servers, like wrk.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Latencies:
    seconds: list[float]  # one per answered request
    errors: int  # answers other than 200

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[round(q * (len(ordered) - 1))] * 1000 if ordered else float("nan")

    @property
    def p50_ms(self) -> float:
        return self.quantile_ms(0.5)


class _Connection:
    """One keep-alive HTTP/1.1 connection to one gateway."""

    def __init__(self, url: str, path: str) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
        if host is None or port is None:
            raise ValueError(f"not a gateway URL with a port: {url}")
        self.socket = socket.create_connection((host, port), timeout=30)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        ).encode()

    def request(self, body: bytes) -> tuple[float, bool]:
        """One request's latency in seconds, and whether it was answered 200."""
        message = self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        began = time.perf_counter()
        self.socket.sendall(message)
        received = b""
        while b"\r\n\r\n" not in received:
            received += self._recv()
        head, _, rest = received.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            rest += self._recv()
        return time.perf_counter() - began, head.startswith(b"HTTP/1.1 200 ")

    def _recv(self) -> bytes:
        chunk = self.socket.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the gateway closed the connection")
        return chunk

    def close(self) -> None:
        self.socket.close()


def run(urls: Mapping[str, str], path: str, bodies: Path, seconds: float) -> dict[str, Latencies]:
    """Each body of the file (one JSON document per line, in turn) to every gateway, for
    `seconds`; each gateway's latencies."""
    lines = [line.encode() for line in bodies.read_text().splitlines() if line]
    connections = {name: _Connection(url, path) for name, url in urls.items()}
    names = list(connections)
    spent: dict[str, list[float]] = {name: [] for name in names}
    errors = dict.fromkeys(names, 0)
    order = random.Random(0)
    try:
        deadline = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < deadline:
            body = lines[sent % len(lines)]
            order.shuffle(names)
            for name in names:
                latency, answered = connections[name].request(body)
                spent[name].append(latency)
                errors[name] += not answered
            sent += 1
    finally:
        for connection in connections.values():
            connection.close()
    return {name: Latencies(spent[name], errors[name]) for name in urls}
