from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

from crimes import contract
from crimes.etl import synthetic
from crimes.etl.preprocess import preprocess
from crimes.transformation import fitting
from tests.support.records import REFERENCE_EXAMPLE


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    features, _ = preprocess(synthetic.sample(3000))
    return features


def fit(data: pd.DataFrame, seed: int = 42) -> tuple[Any, pd.DataFrame]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fitting.fit_transform(
            data[list(contract.FEATURES)], data[contract.TARGET], seed=seed
        )


def test_output_columns_follow_the_reference_design(data: pd.DataFrame) -> None:
    _fitted, matrix = fit(data)
    classes = sorted(data[contract.TARGET].unique())
    onehot = 2 + 2 + data.dia_semana.nunique()
    assert matrix.shape == (len(data), 2 + onehot + 11 * len(classes))
    assert list(matrix.columns[:2]) == ["num__latitude", "num__longitude"]
    assert f"target__iucr_{classes[0]}" in matrix.columns
    assert matrix.dtypes.unique().tolist() == [np.dtype("float64")]
    assert matrix.min().min() >= 0.0
    assert matrix.max().max() <= 1.0 + 1e-9


def test_unknown_categories_and_missing_coordinates_are_handled(data: pd.DataFrame) -> None:
    fitted, _ = fit(data)
    unseen = {
        **REFERENCE_EXAMPLE,
        "iucr": "9999",
        "description": "NEVER SEEN",
        "beat": 9999,
        "latitude": None,
        "longitude": None,
    }
    frame = contract.features_frame([contract.CrimeFeatures(**unseen)])
    out = fitting.transform(fitted, frame)
    assert out.shape[0] == 1
    assert np.isfinite(out.to_numpy()).all()
