"""Drift on real rows: the reference of the real 2024 training split, and windows of its test
split replayed as they are (every PSI low) and shifted on purpose (one district only, night
hours only: the shifted feature far above the alert's 0.2 within one window)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from crimes import contract
from crimes.drift import reference as drift_reference
from crimes.drift.reference import Reference
from crimes.drift.window import Window, WindowReport
from crimes.etl.split import Split

WINDOW = 5000
FEATURES = list(contract.FEATURES)


@pytest.fixture(scope="module")
def reference(real_splits: Split) -> Reference:
    return drift_reference.of_features(real_splits.train[FEATURES], "ds-real")


def replay(reference: Reference, rows: pd.DataFrame) -> WindowReport:
    window = Window(reference, WINDOW, min_records=1000)
    records: list[dict[str, Any]] = json.loads(rows[FEATURES].to_json(orient="records"))
    for record in records:  # one by one, as single requests arrive
        window.add_row(record)
    return window.report()


def psi_of(report: WindowReport) -> dict[str, float]:
    return {f.feature: f.psi for f in report.features}


def test_test_split_rows_keep_every_psi_below_0_1(reference: Reference, real_splits: Split) -> None:
    for seed in (1, 2):
        rows = real_splits.test.sample(n=WINDOW, random_state=seed)
        found = psi_of(replay(reference, rows))
        assert len(found) == len(contract.FEATURES)
        assert max(found.values()) < 0.1, found
        print(f"seed {seed}: worst {max(found, key=found.__getitem__)} {max(found.values()):.4f}")


@pytest.mark.parametrize(
    ("shift", "feature"),
    [
        (lambda t: t[t["district"] == t["district"].mode()[0]], "district"),
        (lambda t: t[t["hora"].isin([0, 1, 2, 3, 4])], "hora"),
    ],
    ids=["one-district", "night-hours"],
)
def test_a_shifted_replay_pushes_the_shifted_feature_above_0_2_within_one_window(
    reference: Reference, real_splits: Split, shift: Any, feature: str
) -> None:
    rows = shift(real_splits.test).head(WINDOW)
    report = replay(reference, rows)
    found = psi_of(report)
    assert found[feature] > 0.2, found
    assert report.worst(1)[0].feature == feature
    print(f"{feature}: PSI {found[feature]:.3f} over {report.records} records")


def test_real_rows_by_columns_fill_the_window_as_one_by_one(
    reference: Reference, real_splits: Split
) -> None:
    """The batch path (vectorised buckets) and the single-record path agree bucket for
    bucket on real records (missing coordinates and locations, unknown categories)."""
    records: list[dict[str, Any]] = json.loads(
        real_splits.test[FEATURES].head(3000).to_json(orient="records")
    )
    one_by_one, by_columns = Window(reference, WINDOW, 1), Window(reference, WINDOW, 1)
    for record in records:
        one_by_one.add_row(record)
    by_columns.add_columns(contract.feature_columns(records), len(records))
    assert (one_by_one._buckets == by_columns._buckets).all()
    assert (one_by_one._unknown == by_columns._unknown).all()
    assert one_by_one.report() == by_columns.report()
    # The same through validation, whose categorical columns are Categories (each distinct
    # value coded once), as the gateway's batches reach the window.
    validated = Window(reference, WINDOW, 1)
    columns = contract.validate_columns(contract.feature_columns(records), len(records))
    assert any(isinstance(c, contract.Categories) for c in columns.values())
    validated.add_columns(columns, len(records))
    assert (one_by_one._buckets == validated._buckets).all()
    assert (one_by_one._unknown == validated._unknown).all()
