"""One real serving system for the attacks (both model services on the trained champions, and
the gateway), shared by the catalogue's files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from crimes.local import launch
from crimes.local.launch import LocalProcess
from tests.support.system import gateway_env, serving_system


@pytest.fixture(scope="session")
def attacked(
    trained: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LocalProcess]]:
    with serving_system(tmp_path_factory.mktemp("attacked")) as started:
        yield started


@contextmanager
def own_gateway(
    attacked: dict[str, LocalProcess], folder: Path, **settings: str
) -> Iterator[LocalProcess]:
    """A gateway of its own (these CRIMES_GATEWAY_* settings) on the attacked model services,
    healthy, for the length of the block."""
    services = {kind: attacked[kind] for kind in ("dtc", "lda")}
    process = launch.serve(LocalProcess, "gateway", gateway_env(services, **settings), folder)
    try:
        process.wait_healthy()
        yield process
    finally:
        process.stop()
