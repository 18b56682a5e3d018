"""The request id: one id per gateway request, in every log line written for it, carried to the
model services in gRPC metadata, and in their log lines for the calls it caused.

A client may send its own (`X-Request-ID`, visible ASCII, at most 128 characters); anything
else is replaced by a fresh id, never echoed back unchecked (a log line or a header must not
carry what a client injected).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any, Final

HEADER: Final = "x-request-id"
# gRPC metadata keys are lower-case; a coalesced call carries one entry per record's request.
METADATA_KEY: Final = HEADER
MAX_LENGTH: Final = 128
_VALID: Final = re.compile(rf"[A-Za-z0-9._:/+=@-]{{1,{MAX_LENGTH}}}")

# The id of the request (gateway) or call (model service) the running task works for.
current: ContextVar[str] = ContextVar("request_id", default="")
# Who sent the request the running task works for, as the gateway sees it (the peer's
# address): the drift windows count distinct clients, so one client's records are no evidence.
client: ContextVar[str] = ContextVar("client", default="")


def new() -> str:
    """32 random hex digits (a UUID4's length; os.urandom is five times cheaper than uuid4)."""
    return os.urandom(16).hex()


def accepted(value: str | bytes | None) -> str:
    """A client's id when it is a valid one, else a new id."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return new()
    if value and _VALID.fullmatch(value):
        return value
    return new()


def from_metadata(metadata: Iterable[Any] | None) -> str:
    """The request ids a gRPC call carries (comma-joined, each checked), or ""."""
    ids = []
    for item in metadata or ():
        key, value = item
        if key == METADATA_KEY and isinstance(value, str) and _VALID.fullmatch(value):
            ids.append(value)
    return ",".join(ids)


def metadata(ids: Iterable[str]) -> tuple[tuple[str, str], ...]:
    return tuple((METADATA_KEY, i) for i in ids if i)


def add_to_log(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current request id, in every line written while it is set."""
    request_id = current.get()
    if request_id:
        event.setdefault("request_id", request_id)
    return event
