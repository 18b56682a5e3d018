"""The gateway's HTTP connections under uvicorn, with the one bound uvicorn lacks: a request's
headers must arrive within `header_timeout` of its first byte (of the connection, for its first
request), else the connection is closed. Without it a client that sends a header byte now and
then holds a connection (a socket, a file descriptor) for as long as it likes; a few thousand
such clients exhaust the gateway's descriptors. Between requests, uvicorn's keep-alive timeout
already closes an idle connection; the body has the edge's own timeout."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from crimes.ops.logs import get_logger

log = get_logger(__name__)


class HeaderTimedProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def bounded(cls, seconds: float) -> type[HeaderTimedProtocol]:
        """This protocol with its header timeout (uvicorn takes a class)."""
        return type(cls.__name__, (cls,), {"header_timeout": seconds})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # a next request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        log.debug("gateway.headers_timed_out", client=self.client)
        self.transport.close()
