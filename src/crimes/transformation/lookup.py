"""The transformation as lookup tables, built from its document: what serving computes with,
without pandas or scikit-learn.

The reference spent ~18 ms per request building a DataFrame and running the fitted pipeline.
Every output column of the fitted transformation depends on one input feature only (imputation,
MinMax scaling, one-hot and target encoding are all per feature), so the whole transformation of
a categorical feature is a table from category to output values: the document holds those
tables, computed by the fitted pipeline itself. Looking values up gives output numerically
identical to the pipeline's (the tests compare every row of the real test set). Latitude and
longitude are computed with the same float64 operations, in the same order, as the imputer and
scaler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from crimes import contract
from crimes.transformation.document import TransformationDocument

Vector = npt.NDArray[np.float64]
# What the batch path writes: float64, or float32 for a model that computes on it.
Matrix = npt.NDArray[np.float64] | npt.NDArray[np.float32]
FLOAT64: np.dtype[np.float64] = np.dtype(np.float64)

# Up to this many rows the per-row path is faster; above it, the column-wise batch path.
PER_ROW_MAX = 16


@dataclass(frozen=True)
class _Table:
    feature: str
    columns: npt.NDArray[np.intp]
    by_category: dict[Any, Vector]
    unknown: Vector
    # The category a missing value stands for (the contract's rule for location_description).
    missing: Any = field(init=False)
    # The same values stacked for the batch path: row `position[category]` of `stacked`, and
    # the last row for an unknown category.
    position: dict[Any, int] = field(init=False)
    stacked: npt.NDArray[np.float64] = field(init=False)
    # The same, cast to float32 once: for a model that computes on float32, the batch path
    # writes half the bytes (and a cast of each looked-up value is the looked-up cast value).
    stacked32: npt.NDArray[np.float32] = field(init=False)
    # The output columns as a slice when they are contiguous (they are, in the fitted
    # transformations): a slice assignment is cheaper than a fancy column index.
    target: slice | npt.NDArray[np.intp] = field(init=False)

    def __post_init__(self) -> None:
        missing = contract.MISSING_LOCATION_DESCRIPTION
        object.__setattr__(
            self, "missing", missing if self.feature == "location_description" else None
        )
        position = {category: i for i, category in enumerate(self.by_category)}
        stacked = np.vstack([*self.by_category.values(), self.unknown]).astype(np.float64)
        columns = self.columns
        contiguous = len(columns) > 0 and bool(np.all(np.diff(columns) == 1))
        target = slice(int(columns[0]), int(columns[-1]) + 1) if contiguous else columns
        object.__setattr__(self, "position", position)
        object.__setattr__(self, "stacked", stacked)
        object.__setattr__(self, "stacked32", stacked.astype(np.float32))
        object.__setattr__(self, "target", target)

    @property
    def unknown_position(self) -> int:
        return len(self.position)

    def positions(self, values: Sequence[Any]) -> npt.NDArray[np.intp]:
        """Each value's row of `stacked` (the last row for a category the table lacks): once
        per distinct value for a column given as `Categories`."""
        if isinstance(values, contract.Categories):
            return values.per_row(self.positions(values.values))
        if self.missing is not None:
            values = [self.missing if value is None else value for value in values]
        return np.fromiter(
            map(self.position.get, values, repeat(self.unknown_position)),
            dtype=np.intp,
            count=len(values),
        )


class LookupTransformer:
    def __init__(self, document: TransformationDocument) -> None:
        self.version = document.version
        self.output_columns: list[str] = list(document.output_columns)
        self.n_outputs = len(self.output_columns)
        numeric = {n.feature: n for n in document.numeric}
        ordered = [numeric[name] for name in contract.NUMERIC_FEATURES]
        self._medians = np.array([n.median for n in ordered], dtype=np.float64)
        self._scale = np.array([n.scale for n in ordered], dtype=np.float64)
        self._min = np.array([n.min for n in ordered], dtype=np.float64)
        self._numeric_columns = np.array([n.column for n in ordered], dtype=np.intp)
        self._tables = [
            _Table(
                feature=c.feature,
                columns=np.array(c.columns, dtype=np.intp),
                by_category={
                    category: np.array(values, dtype=np.float64)
                    for category, values in c.categories
                },
                unknown=np.array(c.unknown, dtype=np.float64),
            )
            for c in document.categorical
        ]

    def transform(self, rows: Sequence[Mapping[Any, Any]]) -> tuple[Vector, list[list[str]]]:
        """Transformed rows, and for each row the features whose category was unknown."""
        out = np.empty((len(rows), self.n_outputs), dtype=np.float64)
        if len(rows) > PER_ROW_MAX:
            return out, self._transform_columns(contract.feature_columns(rows), len(rows), out)
        unknown: list[list[str]] = []
        for i, row in enumerate(rows):
            unknown.append(self._fill(out[i], row))
        return out, unknown

    def transform_columns(
        self, columns: Mapping[str, Sequence[Any]], count: int, dtype: np.dtype[Any] = FLOAT64
    ) -> tuple[Matrix, list[list[str]]]:
        """Records given column by column (what a raw-record gRPC request carries): the same
        answers as `transform` on the same records, whichever path it takes."""
        if count > PER_ROW_MAX:
            out: Matrix = np.empty((count, self.n_outputs), dtype=dtype)
            return out, self._transform_columns(columns, count, out)
        names = list(columns)
        rows = [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
        matrix, unknown = self.transform(rows)
        return matrix.astype(dtype, copy=False), unknown

    def _transform_columns(
        self, columns: Mapping[str, Sequence[Any]], count: int, out: Matrix
    ) -> list[list[str]]:
        """The batch path, into `out`: column by column, one fancy-index per feature. The same
        lookups (the same dictionaries) and the same float64 operations as the per-row path,
        so the same bits (in float32: float64's values cast)."""
        single = out.dtype == np.float32
        # None becomes NaN in a float64 array, as in the per-row path.
        out[:, self._numeric_columns] = self._numeric(
            np.array([columns[name] for name in contract.NUMERIC_FEATURES], dtype=np.float64).T
        )
        unknown: list[list[str]] = [[] for _ in range(count)]
        for table in self._tables:
            positions = table.positions(columns[table.feature])
            # `take` rather than a fancy index: the same rows, about half the time.
            out[:, table.target] = (table.stacked32 if single else table.stacked).take(
                positions, axis=0
            )
            for i in np.flatnonzero(positions == table.unknown_position).tolist():
                unknown[i].append(table.feature)
        return unknown

    def _numeric(self, coordinates: Vector) -> Vector:
        """The imputer and the scaler on numeric coordinates (one row, or one row per record):
        the same float64 operations, in the same order, on both paths."""
        coordinates = np.where(np.isnan(coordinates), self._medians, coordinates)
        coordinates *= self._scale
        coordinates += self._min
        return coordinates

    def _fill(self, target: Vector, row: Mapping[Any, Any]) -> list[str]:
        target[self._numeric_columns] = self._numeric(
            np.array(
                [
                    np.nan if row.get(name) is None else float(row[name])
                    for name in contract.NUMERIC_FEATURES
                ],
                dtype=np.float64,
            )
        )
        unknown = []
        for table in self._tables:
            value = row.get(table.feature)
            if value is None:
                value = table.missing
            encoded = table.by_category.get(value)
            if encoded is None:
                unknown.append(table.feature)
                encoded = table.unknown
            target[table.columns] = encoded
        return unknown
