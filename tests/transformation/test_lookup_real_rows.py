"""The serving transformation equals the fitted pipeline on every row of the real 2024 test
split, to the last bit: its per-row path (single requests) and its column-wise batch path."""

from __future__ import annotations

import time
import warnings
from typing import Any, cast

import numpy as np

from crimes import contract
from crimes.etl.split import Split
from crimes.transformation import fitting
from crimes.transformation.lookup import PER_ROW_MAX, LookupTransformer


def test_every_test_row_is_identical(real_splits: Split) -> None:
    parts = real_splits
    columns = list(contract.FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted, _ = fitting.fit_transform(parts.train[columns], parts.train[contract.TARGET])
    expected = fitting.transform(fitted, parts.test[columns]).to_numpy()
    fast = LookupTransformer(fitting.export(fitted))
    rows = parts.test[columns].to_dict("records")
    started = time.perf_counter()
    answers = [fast.transform(rows[i : i + PER_ROW_MAX]) for i in range(0, len(rows), PER_ROW_MAX)]
    per_row = (time.perf_counter() - started) / len(rows)
    got = np.vstack([matrix for matrix, _ in answers])
    unknown = [names for _, row_unknown in answers for names in row_unknown]
    assert got.shape == expected.shape == (len(parts.test), fast.n_outputs)
    assert np.array_equal(got, expected)  # bit for bit, NaN-free
    # The batch path (more than PER_ROW_MAX rows at once): the same bits, the same unknowns.
    started = time.perf_counter()
    batch, batch_unknown = fast.transform(rows)
    per_batch_row = (time.perf_counter() - started) / len(rows)
    assert np.array_equal(batch, expected)
    assert batch_unknown == unknown
    # In float32 (for a model that computes on it): float64's values cast, on both paths.
    by_column = contract.feature_columns(cast(list[dict[str, Any]], rows))
    single = np.dtype(np.float32)
    narrow, narrow_unknown = fast.transform_columns(by_column, len(rows), single)
    few, _ = fast.transform_columns(
        {k: v[:PER_ROW_MAX] for k, v in by_column.items()}, PER_ROW_MAX, single
    )
    assert narrow.dtype == few.dtype == single
    assert np.array_equal(narrow, expected.astype(np.float32))
    assert np.array_equal(few, expected[:PER_ROW_MAX].astype(np.float32))
    assert narrow_unknown == unknown
    # Validated columns, as the gateway's batches come: categorical ones as Categories (each
    # distinct value looked up once), the same bits and unknowns.
    validated = contract.validate_columns(by_column, len(rows))
    assert isinstance(validated["iucr"], contract.Categories)
    checked, checked_unknown = fast.transform_columns(validated, len(rows), single)
    assert np.array_equal(checked, expected.astype(np.float32))
    assert checked_unknown == unknown
    assert fast.output_columns == list(fitting.transform(fitted, parts.test.head(1)).columns)
    assert fast.version == fitting.export(fitted).version
    # Categories only the test split has (a rare IUCR, say) are reported, never an error.
    assert sum(len(u) for u in unknown) < len(rows) * 0.01
    print(f"fast transform: {per_row * 1e6:.1f} us per row in {PER_ROW_MAX}-row calls, "
          f"{per_batch_row * 1e6:.2f} us per row in one batch")  # fmt: skip
