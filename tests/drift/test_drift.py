"""Drift's core: the reference a training split makes, the serving window, PSI and the verdict
(the unit checks; the real-row replays are in test_real_rows.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from crimes import contract
from crimes.drift import reference as drift_reference
from crimes.drift.reference import InvalidReference, psi
from crimes.drift.verdict import judge
from crimes.drift.window import Window
from tests.support.records import REFERENCE_EXAMPLE


def training_frame(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Contract features with known shares: district 1..4 equally, 10% missing latitude."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame([REFERENCE_EXAMPLE] * rows)
    frame["district"] = np.tile([1, 2, 3, 4], rows // 4)
    frame["hora"] = rng.integers(0, 24, rows)
    frame["latitude"] = rng.uniform(41.6, 42.0, rows)
    frame.loc[frame.index % 10 == 0, "latitude"] = np.nan
    frame["iucr"] = [f"{i % 80:04d}" for i in range(rows)]  # 80 codes: 50 kept, 30 "other"
    return frame


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return rows


def test_the_reference_buckets_categories_numbers_and_missing_values() -> None:
    reference = drift_reference.of_features(training_frame(), "ds-test")
    district = reference.features["district"]
    assert district.kind == "category"
    assert district.categories == (1, 2, 3, 4)
    assert district.expected == pytest.approx((0.25, 0.25, 0.25, 0.25, 0.0, 0.0))
    iucr = reference.features["iucr"]
    assert len(iucr.categories) == drift_reference.MAX_CATEGORIES
    assert iucr.expected[-2] == pytest.approx(30 / 80)  # the rest share "other"
    assert iucr.bucket("0079") == drift_reference.MAX_CATEGORIES  # known, but in "other"
    assert not iucr.unknown("0079")
    assert iucr.unknown("9999")
    latitude = reference.features["latitude"]
    assert latitude.kind == "numeric"
    assert len(latitude.edges) == drift_reference.NUMERIC_BINS - 1
    assert latitude.expected[-1] == pytest.approx(0.1)  # missing
    assert latitude.bucket(None) == latitude.bucket(math.nan) == latitude.buckets - 1
    assert latitude.bucket(10.0) == 0
    assert latitude.bucket(80.0) == latitude.buckets - 2
    for feature in reference.features.values():
        assert sum(feature.expected) == pytest.approx(1)


def test_a_missing_location_description_is_bucketed_as_training_holds_it() -> None:
    frame = training_frame()
    frame["location_description"] = None
    reference = drift_reference.of_features(frame, "ds-test")
    window = Window(reference, 100, 1)
    window.add_row({**REFERENCE_EXAMPLE, "location_description": None})
    (found,) = [f for f in window.report().features if f.feature == "location_description"]
    assert found.psi == pytest.approx(0)
    assert found.unknown_share == 0


def test_the_document_round_trips_and_a_changed_one_is_refused() -> None:
    reference = drift_reference.of_features(training_frame(), "ds-test")
    data = reference.dumps()
    again = drift_reference.loads(data, expected_version=reference.version)
    assert again.version == reference.version
    assert again.features == reference.features
    tampered = data.replace(b'"rows":2000', b'"rows":2001')
    with pytest.raises(InvalidReference, match="expected ref-"):
        drift_reference.loads(tampered, expected_version=reference.version)
    other_contract = json.loads(data)
    other_contract["contract_version"] = "contract-000000000000"
    with pytest.raises(InvalidReference, match="made for contract"):
        drift_reference.loads(json.dumps(other_contract).encode())
    with pytest.raises(InvalidReference, match="not a reference"):
        drift_reference.loads(b"[1, 2]")


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    small, large = psi([0.5, 0.5], [0.6, 0.4]), psi([0.5, 0.5], [0.9, 0.1])
    assert 0 < small < 0.1 < 0.2 < large
    # A bucket empty on both sides costs nothing; empty on one side a bounded amount.
    assert psi([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]) == 0
    assert psi([1.0, 0.0], [0.0, 1.0]) < 20


def test_the_window_keeps_the_last_records_only_and_judges_from_its_minimum() -> None:
    reference = drift_reference.of_features(training_frame(), "ds-test")
    rows = records(training_frame(400, seed=1))
    window = Window(reference, capacity=200, min_records=100)
    for row in rows[:99]:
        window.add_row(row)
    assert not window.report().judged  # 99 < the minimum: nothing judged yet
    for row in rows[99:]:
        window.add_row(row)
    report = window.report()
    assert report.records == 200
    assert report.judged
    by_name = {f.feature: f for f in report.features}
    assert by_name["district"].psi == pytest.approx(0, abs=1e-9)  # the same 25% each
    # The newest 200 records only: 200 records of district 4 now fill the window.
    for row in rows[:200]:
        window.add_row({**row, "district": 4})
    by_name = {f.feature: f for f in window.report().features}
    assert by_name["district"].psi > 1
    assert [f.feature for f in window.report().worst(1)] == ["district"]


def test_rows_and_columns_fill_the_window_alike_and_wrap_around() -> None:
    reference = drift_reference.of_features(training_frame(), "ds-test")
    rows = records(training_frame(332, seed=2))
    rows[5]["iucr"] = "9999"  # unknown
    # Unknown again (each judged once per batch), and a missing location (its filled bucket):
    # inside the last 128 rows that both windows keep.
    rows[300]["iucr"] = rows[310]["iucr"] = "9999"
    rows[301]["location_description"] = None
    one_by_one, by_columns = Window(reference, 128, 1), Window(reference, 128, 1)
    for row in rows:
        one_by_one.add_row(row)
    for start in range(0, len(rows), 100):  # 100, 100, 100, 32: the ring wraps mid-batch
        part = rows[start : start + 100]
        by_columns.add_columns(contract.feature_columns(part), len(part))
    assert one_by_one.report() == by_columns.report()
    whole = Window(reference, 128, 1)
    whole.add_columns(contract.feature_columns(rows), len(rows))  # larger than the window
    assert whole.report() == one_by_one.report()
    early = Window(reference, 1000, 1)
    early.add_columns(contract.feature_columns(rows), len(rows))
    (iucr,) = [f for f in early.report().features if f.feature == "iucr"]
    assert iucr.unknown_share == pytest.approx(3 / len(rows))


def test_calendar_features_are_reported_but_never_judged() -> None:
    reference = drift_reference.of_features(training_frame(), "ds-test")
    window = Window(reference, 2000, 1)
    for row in records(training_frame(2000)):  # the training rows, in December
        window.add_row({**row, "mes": 12, "dia_mes": 24})
    report = window.report()
    calendar = {f.feature: f for f in report.features if not f.judged}
    assert set(calendar) == set(contract.CALENDAR_FEATURES)
    assert all(f.psi > 0.2 for f in calendar.values())  # shown as far off...
    assert not {f.feature for f in report.worst(16)} & set(calendar)  # ...never the worst
    verdict = judge({"dtc": {"version": "1", "window": report.as_dict()}}, threshold=0.2)
    assert not verdict.retrain, verdict.reason


def test_the_verdict_names_the_drifted_features_worst_first() -> None:
    def window(**psis: float) -> dict[str, Any]:
        features = [{"feature": f, "psi": p, "judged": True} for f, p in psis.items()]
        return {"records": 5000, "features": features}

    report = {
        "dtc": {"version": "3", "window": window(district=0.9, hora=0.05)},
        "lda": {"version": "1", "window": window(district=0.9, hora=0.3)},
    }
    verdict = judge(report, threshold=0.2)
    assert verdict.retrain
    assert [d[2] for d in verdict.drifted] == ["district", "district", "hora"]
    assert "district of dtc v3 at PSI 0.900" in verdict.reason
    calm = judge({"dtc": {"version": "3", "window": window(hora=0.05)}}, threshold=0.2)
    assert not calm.retrain
    assert "below PSI 0.2" in calm.reason
    empty = judge({"dtc": {"version": "3", "window": {"records": 10, "features": []}}}, 0.2)
    assert not empty.retrain
    assert "enough records" in empty.reason


def test_a_window_counts_its_distinct_clients_and_every_record_it_took() -> None:
    reference = drift_reference.of_features(training_frame(), "ds-test")
    rows = records(training_frame(300, seed=3))
    window = Window(reference, 100, 1)
    window.add_columns(contract.feature_columns(rows[:60]), 60, source=1)
    window.add_row(rows[60], source=2)
    assert (window.report().sources, window.report().total) == (2, 61)
    # The window turns over: only the newest client's records are left in it.
    window.add_columns(contract.feature_columns(rows[61:]), len(rows) - 61, source=3)
    assert (window.report().sources, window.report().total) == (1, 300)
