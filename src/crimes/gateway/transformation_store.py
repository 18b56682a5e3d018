"""The gateway's store of transformations, by version, as lookup-table transformers.

The gateway finds a transformation itself, from the model version a service says it serves:
the registry names that version's run, whose `transformation/transformation.json` is the
document (or else the model's bundle in the data lake holds it). What a model service reports
is only the version asked for: the document's hash must equal it, and nothing is unpickled.
Fetched once per version.
"""

from __future__ import annotations

import asyncio

from crimes import registry
from crimes.ops.logs import get_logger
from crimes.registry import artifacts
from crimes.transformation import document
from crimes.transformation.lookup import LookupTransformer

log = get_logger(__name__)


class TransformationUnavailable(Exception):
    pass


class TransformationStore:
    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._by_version: dict[str, LookupTransformer] = {}
        self._loading: dict[str, asyncio.Task[LookupTransformer]] = {}
        self._warming: set[asyncio.Task[None]] = set()  # (references keep them alive)

    def cached(self, version: str) -> LookupTransformer | None:
        return self._by_version.get(version)

    async def get(self, version: str, model_name: str, model_version: str) -> LookupTransformer:
        """The transformation `version` of the registered model version that a service serves."""
        found = self._by_version.get(version)
        if found is not None:
            return found
        task = self._loading.get(version)
        if task is None:
            task = asyncio.create_task(
                asyncio.to_thread(self._load, version, model_name, model_version)
            )
            self._loading[version] = task
            task.add_done_callback(lambda done: self._finished(version, done))
        # A caller that gives up (its deadline) must not cancel the load the others wait on.
        return await asyncio.shield(task)

    def warm(self, version: str, model_name: str, model_version: str) -> None:
        """Start loading a version in the background (once: a load in flight is not doubled);
        a failure is logged, and the next warm tries again."""
        if version in self._by_version or version in self._loading:
            return

        async def load() -> None:
            try:
                await self.get(version, model_name, model_version)
            except TransformationUnavailable as error:
                log.warning("gateway.transformation_unavailable", error=str(error))

        task = asyncio.get_running_loop().create_task(load())
        self._warming.add(task)
        task.add_done_callback(self._warming.discard)

    def _finished(self, version: str, task: asyncio.Task[LookupTransformer]) -> None:
        self._loading.pop(version, None)
        if not task.cancelled() and task.exception() is None:
            self._by_version[version] = task.result()
            log.info("gateway.transformation_loaded", version=version)

    def _load(self, version: str, model_name: str, model_version: str) -> LookupTransformer:
        problems = []
        for source, read in (("mlflow", self._from_registry), ("lake", self._from_lake)):
            try:
                data = read(model_name, model_version)
                transformation = document.loads(data, expected_version=version)
            except Exception as error:
                problems.append(f"{source}: {error}")
                continue
            return LookupTransformer(transformation)
        raise TransformationUnavailable(
            f"transformation {version} of {model_name} version {model_version} not found "
            f"({'; '.join(problems)})"
        )

    def _from_registry(self, model_name: str, model_version: str) -> bytes:
        return artifacts.version_artifact(
            self.tracking_uri, model_name, model_version, registry.TRANSFORMATION_ARTIFACT
        )

    def _from_lake(self, model_name: str, model_version: str) -> bytes:
        from crimes.lake.storage import Lake
        from crimes.registry import bundles

        return bundles.read_bundle_transformation(Lake(), model_name)
