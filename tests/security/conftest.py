"""One real serving system for the attacks (both model services on the trained champions, and
the gateway), shared by the catalogue's files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from crimes.local.launch import LocalProcess
from tests.support.system import serving_system


@pytest.fixture(scope="session")
def attacked(
    trained: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LocalProcess]]:
    with serving_system(tmp_path_factory.mktemp("attacked")) as started:
        yield started
