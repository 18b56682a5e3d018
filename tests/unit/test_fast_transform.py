from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest

from crimes import contract, synthetic, transformation
from crimes.fast_transform import FastTransformer
from crimes.preprocess import preprocess
from tests.unit.records import REFERENCE_EXAMPLE


@pytest.fixture(scope="module")
def fitted() -> Any:
    data, _ = preprocess(synthetic.sample(2000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted, _ = transformation.fit_transform(
            data[list(contract.FEATURES)], data[contract.TARGET]
        )
    return fitted


def pipeline(fitted: Any, rows: list[dict[str, Any]]) -> np.ndarray:
    frame = contract.features_frame([contract.CrimeFeatures(**r) for r in rows])
    return transformation.transform(fitted, frame).to_numpy()


def test_unknown_and_missing_values_match_the_pipeline(fitted: Any) -> None:
    rows = [
        REFERENCE_EXAMPLE,
        {**REFERENCE_EXAMPLE, "iucr": "9999", "beat": 9999, "description": "NEW"},
        {**REFERENCE_EXAMPLE, "latitude": None, "longitude": None, "location_description": None},
    ]
    fast = FastTransformer(fitted)
    got, unknown = fast.transform(rows)
    assert np.array_equal(got, pipeline(fitted, rows))
    assert unknown[0] == []
    assert set(unknown[1]) == {"iucr", "description", "beat"}
    # Missing becomes the UNKNOWN category, which the synthetic training data never had.
    assert unknown[2] == ["location_description"]


def test_an_empty_batch(fitted: Any) -> None:
    got, unknown = FastTransformer(fitted).transform([])
    assert got.shape == (0, FastTransformer(fitted).n_outputs)
    assert unknown == []


def test_rows_from_a_frame_or_from_json_agree(fitted: Any) -> None:
    data, _ = preprocess(synthetic.sample(50, seed=3))
    frame_rows = data[list(contract.FEATURES)].to_dict("records")
    json_rows = json.loads(data[list(contract.FEATURES)].to_json(orient="records"))
    fast = FastTransformer(fitted)
    assert np.array_equal(fast.transform(frame_rows)[0], fast.transform(json_rows)[0])
