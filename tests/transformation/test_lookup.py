from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest

from crimes import contract
from crimes.etl import synthetic
from crimes.etl.preprocess import preprocess
from crimes.transformation import fitting
from crimes.transformation.lookup import PER_ROW_MAX, LookupTransformer
from tests.support.records import REFERENCE_EXAMPLE


@pytest.fixture(scope="module")
def fitted() -> Any:
    data, _ = preprocess(synthetic.sample(2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted, _ = fitting.fit_transform(data[list(contract.FEATURES)], data[contract.TARGET])
    return fitted


def pipeline(fitted: Any, rows: list[dict[str, Any]]) -> np.ndarray:
    frame = contract.features_frame([contract.CrimeFeatures(**r) for r in rows])
    return fitting.transform(fitted, frame).to_numpy()


def test_unknown_and_missing_values_match_the_pipeline(fitted: Any) -> None:
    rows = [
        REFERENCE_EXAMPLE,
        {**REFERENCE_EXAMPLE, "iucr": "9999", "beat": 9999, "description": "NEW"},
        {**REFERENCE_EXAMPLE, "latitude": None, "longitude": None, "location_description": None},
    ]
    fast = LookupTransformer(fitting.export(fitted))
    got, unknown = fast.transform(rows)
    assert np.array_equal(got, pipeline(fitted, rows))
    assert unknown[0] == []
    assert set(unknown[1]) == {"iucr", "description", "beat"}
    # Missing becomes the UNKNOWN category, which the synthetic training data never had.
    assert unknown[2] == ["location_description"]


def test_an_empty_batch(fitted: Any) -> None:
    got, unknown = LookupTransformer(fitting.export(fitted)).transform([])
    assert got.shape == (0, LookupTransformer(fitting.export(fitted)).n_outputs)
    assert unknown == []


def test_rows_from_a_frame_or_from_json_agree(fitted: Any) -> None:
    data, _ = preprocess(synthetic.sample(50, seed=3))
    frame_rows = data[list(contract.FEATURES)].to_dict("records")
    json_rows = json.loads(data[list(contract.FEATURES)].to_json(orient="records"))
    fast = LookupTransformer(fitting.export(fitted))
    assert np.array_equal(fast.transform(frame_rows)[0], fast.transform(json_rows)[0])


def test_the_batch_path_equals_the_per_row_path_and_the_pipeline(fitted: Any) -> None:
    data, _ = preprocess(synthetic.sample(300, seed=5))
    rows: list[dict[Any, Any]] = data[list(contract.FEATURES)].to_dict("records")
    rows[3] = {**rows[3], "iucr": "9999", "beat": 9999, "description": "NEW"}
    rows[7] = {**rows[7], "latitude": None, "longitude": None, "location_description": None}
    del rows[11]["longitude"]  # a missing key is a null, as in the per-row path
    fast = LookupTransformer(fitting.export(fitted))
    assert len(rows) > PER_ROW_MAX
    batch, batch_unknown = fast.transform(rows)
    singles = [fast.transform([row]) for row in rows]
    assert np.array_equal(batch, np.vstack([matrix for matrix, _ in singles]))
    assert batch_unknown == [names[0] for _, names in singles]
    assert set(batch_unknown[3]) >= {"iucr", "description", "beat"}
    complete = [{**row, "longitude": row.get("longitude")} for row in rows]
    assert np.array_equal(batch, pipeline(fitted, complete))
