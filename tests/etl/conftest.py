"""Fixtures of the extract tests: a few thousand real rows and a portal double serving them."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pandas as pd
import pytest

from crimes.local.portal_double import Fault, FaultPlan, PortalDouble, load_portal_csv

# Enough rows for several pages and a few null fields, few enough to keep every test fast.
SAMPLE_ROWS = 3000

Row = dict[str, str | None]
DoubleFactory = Callable[..., PortalDouble]


@pytest.fixture(scope="session")
def sample_rows(real_data: Path) -> list[Row]:
    """The file's first rows read with the csv module, independently of pandas: the oracle."""
    with gzip.open(real_data, "rt", encoding="utf-8", newline="") as stream:
        reader = csv.DictReader(stream)
        rows: list[Row] = []
        for record in reader:
            rows.append({key: (value if value != "" else None) for key, value in record.items()})
            if len(rows) == SAMPLE_ROWS:
                break
    return rows


@pytest.fixture(scope="session")
def sample_frame(real_data: Path) -> pd.DataFrame:
    return load_portal_csv(real_data, rows=SAMPLE_ROWS)


@pytest.fixture
def portal(request: pytest.FixtureRequest, sample_frame: pd.DataFrame) -> Iterator[DoubleFactory]:
    """Starts portal doubles on the sample (or a given frame) and stops them after the test."""
    started: list[PortalDouble] = []

    def start(
        faults: Sequence[Fault] | FaultPlan = (), frame: pd.DataFrame | None = None
    ) -> PortalDouble:
        double = PortalDouble(sample_frame if frame is None else frame, faults=faults).start()
        started.append(double)
        return double

    yield start
    for double in started:
        double.stop()
