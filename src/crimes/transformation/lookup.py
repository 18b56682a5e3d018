"""The fitted transformation as lookup tables: a per-row path for serving, without pandas.

The reference spent ~18 ms per request building a DataFrame and running the fitted pipeline.
Every output column of the fitted transformation depends on one input feature only (imputation,
MinMax scaling, one-hot and target encoding are all per feature), so the whole transformation of
a categorical feature is a table from category to output values. The tables are computed by the
fitted pipeline itself, once, on every known category (and on one unknown value): the per-row
path then only looks values up, and its output is numerically identical to the pipeline's (the
tests compare every row of the real test set). Latitude and longitude are computed with the same
float64 operations, in the same order, as the imputer and scaler.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from crimes import contract
from crimes.transformation import fitting

Vector = npt.NDArray[np.float64]

# Up to this many rows the per-row path is faster; above it, the column-wise batch path.
PER_ROW_MAX = 16


class _Unknown:
    """A category no training row had (hashable, never equal to a real value)."""

    def __repr__(self) -> str:
        return "<unknown>"


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
        object.__setattr__(self, "target", target)

    @property
    def unknown_position(self) -> int:
        return len(self.position)


class LookupTransformer:
    def __init__(self, fitted: Any) -> None:
        self.version = fitting.version_id(fitted)
        self.output_columns: list[str] = [str(c) for c in fitted.get_feature_names_out()]
        self.n_outputs = len(self.output_columns)
        index = {name: i for i, name in enumerate(self.output_columns)}
        numeric = fitted.named_transformers_["num"]
        self._medians = numeric.named_steps["impute"].statistics_.astype(np.float64)
        self._scale = numeric.named_steps["scale"].scale_.astype(np.float64)
        self._min = numeric.named_steps["scale"].min_.astype(np.float64)
        self._numeric_columns = np.array(
            [index[f"num__{name}"] for name in contract.NUMERIC_FEATURES], dtype=np.intp
        )
        self._tables = [
            *self._tables_of(fitted, "onehot", contract.ONEHOT_FEATURES, index),
            *self._tables_of(fitted, "target", contract.TARGET_ENCODED_FEATURES, index),
        ]

    @staticmethod
    def _tables_of(
        fitted: Any, block: str, features: Sequence[str], index: Mapping[str, int]
    ) -> list[_Table]:
        step = fitted.named_transformers_[block]
        encoder = step.named_steps["encode"] if hasattr(step, "named_steps") else step
        names = list(step.get_feature_names_out(list(features)))
        block_columns = np.array([index[f"{block}__{n}"] for n in names], dtype=np.intp)
        known = [list(categories) for categories in encoder.categories_]
        tables = []
        for position, feature in enumerate(features):
            values: list[Any] = [*known[position], _Unknown()]
            # Every other feature holds a known category; only this feature's columns are kept.
            probe = pd.DataFrame(
                {
                    other: [known[j][0]] * len(values) if other != feature else values
                    for j, other in enumerate(features)
                },
                dtype=object,
            )
            out = np.asarray(step.transform(probe), dtype=np.float64)
            mine = [i for i, n in enumerate(names) if n.startswith(f"{feature}_")]
            # "mes_" is a prefix of no other feature's names, but "dia_mes_" starts with "dia_":
            # keep only the names of exactly this feature.
            mine = [i for i in mine if _feature_of(names[i], features) == feature]
            tables.append(
                _Table(
                    feature=feature,
                    columns=block_columns[mine],
                    by_category={
                        value: out[row, mine].copy() for row, value in enumerate(values[:-1])
                    },
                    unknown=out[-1, mine].copy(),
                )
            )
        return tables

    def transform(self, rows: Sequence[Mapping[Any, Any]]) -> tuple[Vector, list[list[str]]]:
        """Transformed rows, and for each row the features whose category was unknown."""
        if len(rows) > PER_ROW_MAX:
            return self._transform_columns(rows)
        out = np.empty((len(rows), self.n_outputs), dtype=np.float64)
        unknown: list[list[str]] = []
        for i, row in enumerate(rows):
            unknown.append(self._fill(out[i], row))
        return out, unknown

    def _transform_columns(
        self, rows: Sequence[Mapping[Any, Any]]
    ) -> tuple[Vector, list[list[str]]]:
        """The batch path: column by column, one fancy-index per feature. The same lookups
        (the same dictionaries) and the same float64 operations as the per-row path, so the
        same bits."""
        count = len(rows)
        out = np.empty((count, self.n_outputs), dtype=np.float64)
        columns = self._columns(rows)
        # None becomes NaN in a float64 array, as in the per-row path.
        out[:, self._numeric_columns] = self._numeric(
            np.array([columns[name] for name in contract.NUMERIC_FEATURES], dtype=np.float64).T
        )
        unknown: list[list[str]] = [[] for _ in range(count)]
        for table in self._tables:
            values = columns[table.feature]
            if table.missing is not None:
                values = [table.missing if value is None else value for value in values]
            positions = np.fromiter(
                map(table.position.get, values, repeat(table.unknown_position)),
                dtype=np.intp,
                count=count,
            )
            out[:, table.target] = table.stacked[positions]
            for i in np.flatnonzero(positions == table.unknown_position).tolist():
                unknown[i].append(table.feature)
        return out, unknown

    @staticmethod
    def _columns(rows: Sequence[Mapping[Any, Any]]) -> dict[str, Sequence[Any]]:
        values: list[Sequence[Any]]
        try:
            # Every feature present (validated records): one C-level pass over the rows.
            values = list(zip(*map(operator.itemgetter(*contract.FEATURES), rows), strict=True))
        except KeyError:
            values = [[row.get(name) for row in rows] for name in contract.FEATURES]
        return dict(zip(contract.FEATURES, values, strict=True))

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


def _feature_of(output_name: str, features: Sequence[str]) -> str:
    """The input feature an encoder output name belongs to: the longest matching prefix."""
    matches = [f for f in features if output_name.startswith(f"{f}_")]
    return max(matches, key=len)
