from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from crimes.settings import StackSettings
from crimes.stack import down


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(count: int) -> int:
    """The first of `count` consecutive ports free on 127.0.0.1 (Swift's backends need 3)."""
    for _ in range(200):
        base = random.randrange(20_000, 30_000)
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found")


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
