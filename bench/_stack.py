"""A throw-away local stack (SeaweedFS S3 + MLflow on PostgreSQL) for the benchmarks."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from crimes.lake.settings import lake_settings
from crimes.local import stack
from crimes.local.settings import StackSettings
from crimes.local.stack import backend
from crimes.settings import tracking_settings

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/chicago_crimes_2024.csv.gz"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"


def data_file() -> str:
    return os.environ.get("CRIMES_TEST_DATA", str(DEFAULT_DATA))


@contextmanager
def throwaway_stack(object_store: str = "seaweedfs") -> Iterator[dict[str, str]]:
    """Start a stack on free ports, export its client settings, and remove it all after."""
    with tempfile.TemporaryDirectory(prefix="crimes-bench-") as state:
        settings = StackSettings(
            state_dir=Path(state),
            object_store=object_store,  # type: ignore[arg-type]
            postgres_url=POSTGRES_URL,
            mlflow_database=f"crimes_bench_{uuid.uuid4().hex[:8]}",
            mlflow_port=stack.free_port(),
            seaweedfs_port=stack.free_port(),
            seaweedfs_internal_base_port=stack.free_port_block(9),
        )
        started = time.perf_counter()
        stack.up(settings)
        print(f"stack up: {time.perf_counter() - started:.1f} s")
        saved = dict(os.environ)
        try:
            env = stack.env_exports(settings)
            os.environ.update(env)
            lake_settings.cache_clear()
            tracking_settings.cache_clear()
            yield env
        finally:
            os.environ.clear()
            os.environ.update(saved)
            stack.down(settings)
            backend.drop_database(settings)
