"""Fixtures every test directory may use: where the real Chicago crimes file is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "chicago_crimes_2024.csv.gz"


def real_data_file() -> Path:
    """The real 2024 file, from CRIMES_TEST_DATA; missing is a skip, or a failure under CI."""
    path = Path(os.environ.get("CRIMES_TEST_DATA") or DEFAULT_DATA)
    if not path.is_file():
        reason = f"the real Chicago crimes file is absent ({path}); set CRIMES_TEST_DATA"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def real_data() -> Path:
    return real_data_file()


@pytest.fixture(scope="session")
def real_splits(real_data: Path) -> Any:
    """The real file preprocessed and split as the ETL does (test share 0.3, seed 42): made
    once per session for every test that needs real rows in memory (read, never changed)."""
    from crimes.etl.extract import read_file
    from crimes.etl.preprocess import preprocess
    from crimes.etl.split import split

    features, _ = preprocess(read_file(str(real_data)).frame)
    return split(features, test_size=0.3, seed=42)


# The local stack of real services, shared by every part's end-to-end tests (one per session).
pytest_plugins = ["tests.support.stack"]
