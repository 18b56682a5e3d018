"""The gateway's view of every model service's replicas, kept for `GET /models`: refreshed in
the background at most once per interval (a DNS lookup and two RPCs per replica), so a caller
of /models costs a dictionary read, however often and however many call it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from crimes.gateway.backends import ModelService, replica_states
from crimes.ops.logs import get_logger

log = get_logger(__name__)


def every_replica_ready(replicas: Mapping[str, Sequence[Mapping[str, Any]]]) -> bool:
    """Every model service has replicas, and every replica is ready (`replicas`: per model,
    its replicas' states, as the board keeps them and /models lists them)."""
    return all(found and all(r["ready"] for r in found) for found in replicas.values())


class ReplicaBoard:
    def __init__(self, services: Mapping[str, ModelService]) -> None:
        self.services = services
        self.replicas: dict[str, list[dict[str, Any]]] = {kind: [] for kind in services}
        # Seconds since the epoch of the last refresh (None: not yet).
        self.refreshed_at: float | None = None

    async def refresh(self) -> None:
        kinds = list(self.services)
        found = await asyncio.gather(
            *(replica_states(self.services[kind]) for kind in kinds), return_exceptions=True
        )
        for kind, replicas in zip(kinds, found, strict=True):
            if isinstance(replicas, BaseException):
                # The last view stays: a lookup that fails says nothing about the replicas.
                log.warning("gateway.replicas_refresh_failed", model=kind, error=str(replicas))
            else:
                self.replicas[kind] = replicas
        self.refreshed_at = time.time()

    async def keep_fresh(self, every: float, unsettled_every: float) -> None:
        """Refresh every `every` seconds; while a replica is missing or not ready (a start, a
        new version loading), every `unsettled_every`, so /models catches up within that."""
        while True:
            await self.refresh()
            settled = every_replica_ready(self.replicas)
            await asyncio.sleep(every if settled else min(every, unsettled_every))
