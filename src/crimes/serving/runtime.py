"""The model lifecycle: the first load with its fallbacks, the alias watcher, atomic swaps.

Everything that touches `current` runs on the server's event loop; the slow parts (MLflow
calls, unpickling, the checks, writing the local copy) run in worker threads and hand back a
fully checked `LoadedModel`. The swap is one reference assignment on the loop, between two
requests: a request reads `current` once and predicts with that model to the end, so none sees
a half-loaded model, and a version that fails to load never replaces the one serving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final

from crimes.ops.logs import get_logger
from crimes.registry import CHAMPION
from crimes.serving.errors import ModelLoadError
from crimes.serving.metrics import Metrics
from crimes.serving.model import LoadedModel
from crimes.serving.settings import ModelServerSettings
from crimes.serving.sources import (
    Fallback,
    Registry,
    RegistryError,
    VersionRef,
    load_fallback,
    save_local_copy,
)

log = get_logger("crimes.serving")

LOADED: Final = "loaded"
FAILED: Final = "failed"
FALLBACK: Final = "fallback"
UNCHANGED: Final = "unchanged"
UNREACHABLE: Final = "unreachable"
SKIPPED: Final = "skipped"
UNLOADED: Final = "unloaded"


class ModelRuntime:
    def __init__(
        self,
        settings: ModelServerSettings,
        registry: Registry,
        fallback_chain: list[Fallback],
        metrics: Metrics,
        on_change: Callable[[LoadedModel], Awaitable[None]] | None = None,
        on_unload: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.fallback_chain = fallback_chain
        self.metrics = metrics
        self.on_change = on_change
        self.on_unload = on_unload
        self.current: LoadedModel | None = None
        # Versions that failed to load, and when: not retried until the alias moves or later.
        self._failed: dict[str, float] = {}
        self._registry_reachable: bool | None = None
        self.log = log.bind(model=settings.name, alias=settings.alias)

    @property
    def ready(self) -> bool:
        return self.current is not None

    async def start(self) -> str:
        """The first load: the alias's version from MLflow, else the fallback chain."""
        try:
            ref = await self._resolve()
        except RegistryError as error:
            if error.reachable and self.settings.alias != CHAMPION:
                # The registry answered: no version holds this alias (a challenger deployment
                # before a retrain loses, or after its challenger was promoted). Nothing else
                # may stand in for it: every fallback is a copy of some other version.
                self.log.info("model.no_version_holds_the_alias", reason=str(error))
                return FAILED
            self.log.warning("model.registry_unavailable_at_start", reason=str(error))
        else:
            outcome = await self._load(ref)
            if outcome == LOADED:
                return LOADED
        model, reasons = await asyncio.to_thread(
            load_fallback, self.fallback_chain, self.settings.alias, self.settings.onnx_threads
        )
        if model is None:
            self.log.error(
                "model.none_available",
                tried=[str(f.source) for f in self.fallback_chain],
                reasons=reasons,
                hint="not ready; the alias is still watched",
            )
            return FAILED
        self.metrics.reload(FALLBACK)
        await self._install(model, save=False, event="model.serving_fallback")
        return FALLBACK

    async def watch(self) -> None:
        """Check the alias every poll interval, forever (cancel the task to stop)."""
        while True:
            await asyncio.sleep(self.settings.poll_interval_seconds)
            try:
                await self.poll_once()
            except Exception:
                # The watcher must outlive any one bad poll; the next one starts afresh.
                self.log.exception("model.poll_error")

    async def poll_once(self) -> str:
        try:
            ref = await self._resolve()
        except RegistryError as error:
            if error.reachable and self.settings.alias != CHAMPION and self.current is not None:
                # Its alias was removed (a challenger promoted, or withdrawn): serving on would
                # shadow a version nobody names any more.
                await self._unload(str(error))
                return UNLOADED
            return UNREACHABLE
        current = self.current
        if current is not None and ref.version == current.version:
            return UNCHANGED
        failed_at = self._failed.get(ref.version)
        if failed_at is not None and (
            time.monotonic() - failed_at < self.settings.retry_failed_after_seconds
        ):
            return SKIPPED
        return await self._load(ref)

    async def _unload(self, reason: str) -> None:
        previous = self.current
        self.current = None
        self.metrics.unloaded()
        if self.on_unload is not None:
            await self.on_unload()
        self.log.info(
            "model.unloaded",
            version=previous.version if previous else None,
            reason=reason,
            hint="not ready until a version holds the alias again",
        )

    async def _resolve(self) -> VersionRef:
        try:
            ref = await asyncio.to_thread(self.registry.resolve)
        except RegistryError as error:
            self._reachable(error.reachable, str(error))
            raise
        self._reachable(True, "")
        return ref

    def _reachable(self, reachable: bool, reason: str) -> None:
        self.metrics.reachable(reachable)
        # Logged on changes only: a registry down for an hour is one line, not 720.
        if reachable != self._registry_reachable:
            if reachable:
                self.log.info("model.registry_reachable", uri=self.settings.tracking_uri)
            else:
                self.log.warning("model.registry_unreachable", reason=reason)
            self._registry_reachable = reachable

    async def _load(self, ref: VersionRef) -> str:
        started = time.monotonic()
        previous = self.current
        self.log.info(
            "model.loading",
            version=ref.version,
            run_id=ref.run_id,
            serving=previous.version if previous else None,
        )
        try:
            model = await asyncio.to_thread(self.registry.load, ref)
        except ModelLoadError as error:
            self._failed[ref.version] = time.monotonic()
            self.metrics.reload(FAILED)
            self.log.error(
                "model.load_failed",
                version=ref.version,
                reason=str(error),
                serving=previous.version if previous else None,
            )
            return FAILED
        self._failed.pop(ref.version, None)
        self.metrics.reload(LOADED)
        await self._install(model, save=True, seconds=round(time.monotonic() - started, 3))
        return LOADED

    async def _install(
        self, model: LoadedModel, *, save: bool, event: str = "model.serving", seconds: float = 0
    ) -> None:
        previous = self.current
        self.current = model
        self.metrics.serving(model)
        if self.on_change is not None:
            await self.on_change(model)
        self.log.info(
            event,
            **model.describe(),
            previous=previous.version if previous else None,
            load_seconds=seconds,
        )
        if save:
            try:
                await asyncio.to_thread(save_local_copy, self.settings, model)
            except Exception as error:
                # Serving goes on; only the next start without MLflow loses this copy.
                self.log.warning(
                    "model.local_copy_failed",
                    path=str(self.settings.local_copy_dir),
                    reason=str(error),
                )
