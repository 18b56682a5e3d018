"""The gateway's store of fitted transformations, by version, as lookup-table transformers.

Fetched once per version: from MLflow (the run that trained the served model logged it), or
else from the data lake's model bundle; its content hash must equal the version asked for.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from crimes.ops.logs import get_logger
from crimes.registry import bundles
from crimes.transformation import fitting
from crimes.transformation.lookup import LookupTransformer

log = get_logger(__name__)


class TransformationUnavailable(Exception):
    pass


class TransformationStore:
    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._by_version: dict[str, LookupTransformer] = {}
        self._loading: dict[str, asyncio.Task[LookupTransformer]] = {}

    def cached(self, version: str) -> LookupTransformer | None:
        return self._by_version.get(version)

    async def get(self, version: str, uri: str | None, model_name: str) -> LookupTransformer:
        found = self._by_version.get(version)
        if found is not None:
            return found
        task = self._loading.get(version)
        if task is None:
            task = asyncio.create_task(asyncio.to_thread(self._load, version, uri, model_name))
            self._loading[version] = task
            task.add_done_callback(lambda done: self._finished(version, done))
        # A caller that gives up (its deadline) must not cancel the load the others wait on.
        return await asyncio.shield(task)

    def _finished(self, version: str, task: asyncio.Task[LookupTransformer]) -> None:
        self._loading.pop(version, None)
        if not task.cancelled() and task.exception() is None:
            self._by_version[version] = task.result()
            log.info("gateway.transformation_loaded", version=version)
            # Loading imported MLflow, scikit-learn, pandas: hundreds of thousands of long-lived
            # objects that every full garbage collection would walk again (~0.1 s each, and a
            # 1,000-record batch allocates enough to trigger collections). Frozen, they are
            # never scanned; requests' own garbage is collected as before.
            gc.freeze()

    def _load(self, version: str, uri: str | None, model_name: str) -> LookupTransformer:
        problems = []
        for source, load in (("mlflow", self._from_mlflow), ("lake", self._from_lake)):
            try:
                fitted = load(uri, model_name)
            except Exception as error:
                problems.append(f"{source}: {error}")
                continue
            if fitted is None:
                continue
            if fitting.version_id(fitted) == version:
                return LookupTransformer(fitted)
            problems.append(f"{source}: holds another version")
        raise TransformationUnavailable(
            f"transformation {version} not found ({'; '.join(problems) or 'no source'})"
        )

    def _from_mlflow(self, uri: str | None, model_name: str) -> Any:
        if not uri:
            return None
        import tempfile
        from pathlib import Path

        import mlflow

        with tempfile.TemporaryDirectory() as folder:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=folder, tracking_uri=self.tracking_uri
            )
            return fitting.loads(Path(path).read_bytes())

    def _from_lake(self, uri: str | None, model_name: str) -> Any:
        from crimes.lake.storage import Lake

        return bundles.read_bundle(Lake(), model_name).transformer
