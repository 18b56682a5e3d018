"""The optional Redis prediction cache.

Keyed by the canonical features AND the served model versions of both models, so a new champion
never answers from an old one's cache. Redis being down means no cache, not an error: after a
failure it is not tried again for a few seconds, so an outage costs no latency per request.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from crimes.ops.logs import get_logger

log = get_logger(__name__)

RETRY_AFTER_SECONDS = 5.0


# Bumped whenever what an entry holds changes: entries of another layout are never read.
LAYOUT = 2


def cache_key(features: dict[str, Any], served: Mapping[str, tuple[str, ...]]) -> str:
    """Everything that defines an answer: the canonical features and, per model, what it is
    served as (registered name, version, transformation version)."""
    canonical = json.dumps(
        {"f": features, "m": served, "layout": LAYOUT}, sort_keys=True, separators=(",", ":")
    )
    return "crimes:predict:" + hashlib.sha256(canonical.encode()).hexdigest()


class PredictionCache:
    def __init__(self, url: str | None, ttl_seconds: int) -> None:
        self.ttl_seconds = ttl_seconds
        self._client: Any = None
        self._down_until = 0.0
        if url:
            import redis.asyncio as redis

            self._client = redis.from_url(
                url, socket_timeout=0.2, socket_connect_timeout=0.2, decode_responses=True
            )

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def _usable(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
        log.warning("gateway.cache_unavailable", error=str(error))

    async def get(self, key: str) -> dict[str, Any] | None:
        if not self._usable():
            return None
        try:
            value = await self._client.get(key)
        except Exception as error:
            self._failed(error)
            return None
        if value is None:
            return None
        try:
            entry = json.loads(value)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            log.warning("gateway.cache_entry_invalid", key=key)
            return None
        return entry

    async def put(self, key: str, value: dict[str, Any]) -> None:
        if not self._usable():
            return
        try:
            await self._client.set(key, json.dumps(value), ex=self.ttl_seconds)
        except Exception as error:
            self._failed(error)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
