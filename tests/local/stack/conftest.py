from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crimes.local.settings import StackSettings
from crimes.local.stack import down, free_port_block


@pytest.fixture
def folder_settings(tmp_path: Path) -> Iterator[StackSettings]:
    """Folder lake + SQLite on free ports in a tmp state dir; whatever was started is stopped."""
    settings = StackSettings(
        state_dir=tmp_path / "stack",
        object_store="folder",
        postgres_url=None,
        mlflow_port=free_port_block(1),
        start_timeout_seconds=60,
    )
    try:
        yield settings
    finally:
        down(settings)
