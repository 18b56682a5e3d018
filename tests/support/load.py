"""Load for overload tests: HTTP/1.1 requests written as raw bytes over keep-alive connections
(a client light enough to offer several times what a gateway on the same two cores answers),
closed-loop to find the saturation rate, open-loop to offer a multiple of it; and a process's
resident memory sampled while it runs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    index: int  # which body was sent (its position in the list given)
    status: int | None  # None: the connection failed
    headers: dict[str, str]
    body: bytes


def request_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body


class Client:
    """Keep-alive connections to one HTTP server, opened as needed up to `max_connections`."""

    def __init__(self, host: str, port: int, max_connections: int) -> None:
        self.host, self.port, self.max_connections = host, port, max_connections
        self._idle: list[_Connection] = []
        self._opened = 0
        self._freed = asyncio.Condition()

    async def _take(self) -> _Connection:
        async with self._freed:
            while not self._idle and self._opened >= self.max_connections:
                await self._freed.wait()
            if self._idle:
                return self._idle.pop()
            self._opened += 1
        try:
            return _Connection(*await asyncio.open_connection(self.host, self.port))
        except OSError:
            self._opened -= 1
            raise

    async def _give_back(self, connection: _Connection | None) -> None:
        async with self._freed:
            if connection is None:
                self._opened -= 1
            else:
                self._idle.append(connection)
            self._freed.notify()

    async def send(self, index: int, request: bytes) -> Answer:
        connection: _Connection | None = None
        try:
            connection = await self._take()
            status, headers, body = await connection.exchange(request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            if connection is not None:
                connection.writer.close()
            await self._give_back(None)
            return Answer(index, None, {}, b"")
        await self._give_back(connection)
        return Answer(index, status, headers, body)

    def close(self) -> None:
        for connection in self._idle:
            connection.writer.close()


def sender(client: Client, requests: list[bytes]) -> Callable[[int], Awaitable[Answer]]:
    """Call number i sends the i-th request (in turn) over the client."""
    return lambda index: client.send(index, requests[index % len(requests)])


async def closed_loop(call: Callable[[int], Awaitable[T]], workers: int, seconds: float) -> list[T]:
    """`workers` clients, each making its next call (numbered) when the last is answered."""
    deadline = time.monotonic() + seconds
    answers: list[T] = []

    async def worker(offset: int) -> None:
        index = offset
        while time.monotonic() < deadline:
            answers.append(await call(index))
            index += workers

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return answers


@dataclass
class OpenLoop:
    offered_per_second: float
    sent: int = 0
    seconds: float = 0.0
    answers: list[Answer] = field(default_factory=list)

    @property
    def sent_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def by_status(self) -> dict[str, int]:
        counts = Counter("failed" if a.status is None else str(a.status) for a in self.answers)
        return dict(sorted(counts.items()))


async def open_loop(
    client: Client, requests: list[bytes], rate: float, seconds: float, tick: float = 0.005
) -> OpenLoop:
    """Requests started at `rate` per second whatever the answers do (each tick starts those
    that are due): the load a server meets when clients outnumber its capacity."""
    result = OpenLoop(offered_per_second=rate)
    tasks: list[asyncio.Task[Answer]] = []
    started = time.monotonic()
    total = int(rate * seconds)
    while result.sent < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        for index in range(result.sent, due):
            tasks.append(asyncio.create_task(client.send(index, requests[index % len(requests)])))
        result.sent = max(result.sent, due)
        await asyncio.sleep(tick)
    result.seconds = time.monotonic() - started
    result.answers = list(await asyncio.gather(*tasks))
    return result


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class MemorySampler:
    """A process's resident memory every `interval` seconds, in a thread, while in the block."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_mib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
