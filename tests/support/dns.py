"""A small real DNS server for the tests (dnslib, UDP and TCP on one free port of 127.0.0.1):
it answers A records for the names it is given, and the answers can change while it runs, as a
cluster's DNS does when replicas come and go."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, list[str]] = {}
        self.queries = 0

    def answer(self, name: str, addresses: list[str]) -> None:
        with self._lock:
            self._records[name.rstrip(".") + "."] = list(addresses)

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname)
        with self._lock:
            self.queries += 1
            addresses = list(self._records.get(name, []))
        if request.q.qtype in (QTYPE.A, QTYPE.ANY):
            for address in addresses:
                reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=1))
        return reply


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


@contextmanager
def dns_server() -> Iterator[tuple[Zone, int]]:
    zone = Zone()
    port = _free_port()
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    servers = [
        DNSServer(zone, address="127.0.0.1", port=port, tcp=tcp, logger=quiet)
        for tcp in (False, True)
    ]
    for server in servers:
        server.start_thread()
    try:
        yield zone, port
    finally:
        for server in servers:
            server.stop()
