"""The per-row serving transformation equals the fitted pipeline on every row of the real
2024 test split, to the last bit."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from crimes import contract, transformation
from crimes.etl.extract import read_file
from crimes.etl.split import split
from crimes.fast_transform import FastTransformer
from crimes.preprocess import preprocess


def test_every_test_row_is_identical(real_data: Path) -> None:
    features, _ = preprocess(read_file(str(real_data)).frame)
    parts = split(features, test_size=0.3, seed=42)
    columns = list(contract.FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted, _ = transformation.fit_transform(parts.train[columns], parts.train[contract.TARGET])
    expected = transformation.transform(fitted, parts.test[columns]).to_numpy()
    fast = FastTransformer(fitted)
    rows = parts.test[columns].to_dict("records")
    started = time.perf_counter()
    got, unknown = fast.transform(rows)
    per_row = (time.perf_counter() - started) / len(rows)
    assert got.shape == expected.shape == (len(parts.test), fast.n_outputs)
    assert np.array_equal(got, expected)  # bit for bit, NaN-free
    assert fast.output_columns == list(transformation.transform(fitted, parts.test.head(1)).columns)
    assert fast.version == transformation.version_id(fitted)
    # Categories only the test split has (a rare IUCR, say) are reported, never an error.
    assert sum(len(u) for u in unknown) < len(rows) * 0.01
    print(f"fast transform: {per_row * 1e6:.1f} us per row")
