"""The serving side of drift: a rolling window of the last N records a model version served,
each kept as its 16 bucket numbers (no record values), and per feature the window's PSI
against the version's reference and its share of unknown categories.

Adding a record is a dictionary lookup or a bisection per feature and one row written into a
ring buffer; the shares are counted only when a report is asked for (a scrape, `/drift`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from crimes import contract
from crimes.drift.reference import FeatureReference, Reference, filled, psi


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    # The share of the window's records with a category no training record had.
    unknown_share: float
    # False for the calendar features (contract.CALENDAR_FEATURES): shown, never judged.
    judged: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "psi": round(self.psi, 6),
            "unknown_share": round(self.unknown_share, 6),
            "judged": self.judged,
        }


@dataclass(frozen=True)
class WindowReport:
    reference: str
    records: int
    capacity: int
    # Empty until the window holds the minimum records a PSI is judged on.
    features: tuple[FeatureDrift, ...]
    # Records ever added (a window is a new one once this grew by `capacity`), and how many
    # distinct clients sent the records it holds: drift one client makes is no evidence.
    total: int = 0
    sources: int = 0

    @property
    def judged(self) -> bool:
        return bool(self.features)

    def worst(self, count: int = 3) -> list[FeatureDrift]:
        """The judged features with the highest PSI."""
        return sorted((f for f in self.features if f.judged), key=lambda f: -f.psi)[:count]

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "records": self.records,
            "capacity": self.capacity,
            "total": self.total,
            "sources": self.sources,
            "features": [f.as_dict() for f in self.features],
        }


class Window:
    """The last `capacity` records served against one reference. Thread-safe: the gateway adds
    on its event loop, a scrape may read from another thread."""

    def __init__(self, reference: Reference, capacity: int, min_records: int) -> None:
        self.reference = reference
        self.capacity = capacity
        self.min_records = min(min_records, capacity)
        self._features = [reference.features[name] for name in contract.FEATURES]
        self._categories = {
            j: _CategoryCodes(f) for j, f in enumerate(self._features) if f.kind == "category"
        }
        # Per feature, what codes one value: its category codes, or None for a numeric one.
        self._coders = [self._categories.get(j) for j in range(len(self._features))]
        self._buckets = np.zeros((capacity, len(self._features)), dtype=np.int16)
        self._unknown = np.zeros((capacity, len(self._features)), dtype=np.bool_)
        self._sources = np.zeros(capacity, dtype=np.int32)
        self._next = 0
        self._filled = 0
        self._total = 0
        self._lock = threading.Lock()

    @property
    def records(self) -> int:
        return self._filled

    def add_row(self, row: Mapping[str, Any], source: int = 0) -> None:
        """One validated record (a dict of the contract's features), from client `source`."""
        buckets: list[int] = []
        unknown: list[int] = []
        for feature, coder in zip(self._features, self._coders, strict=True):
            value = row.get(feature.name)
            if coder is None:
                buckets.append(feature.bucket(value))
                unknown.append(0)
            else:
                code = coder.code(value)
                buckets.append(code >> 1)
                unknown.append(code & 1)
        with self._lock:
            self._buckets[self._next] = buckets
            self._unknown[self._next] = unknown
            self._sources[self._next] = source
            self._advance(1)

    def add_columns(
        self, columns: Mapping[str, Sequence[Any]], count: int, source: int = 0
    ) -> None:
        """Validated records given column by column, from client `source`."""
        if count <= 0:
            return
        start = max(0, count - self.capacity)  # only the newest fit
        buckets = np.empty((count - start, len(self._features)), dtype=np.int16)
        unknown = np.zeros((count - start, len(self._features)), dtype=np.bool_)
        for j, feature in enumerate(self._features):
            column = columns.get(feature.name)
            values = column[start:] if column is not None else [None] * (count - start)
            if feature.kind == "numeric":
                buckets[:, j] = _numeric_buckets(feature, values)
                continue
            found = self._categories[j].codes(values)
            buckets[:, j] = found >> 1
            unknown[:, j] = found & 1
        with self._lock:
            rows = len(buckets)
            first = min(rows, self.capacity - self._next)
            self._buckets[self._next : self._next + first] = buckets[:first]
            self._unknown[self._next : self._next + first] = unknown[:first]
            self._buckets[: rows - first] = buckets[first:]
            self._unknown[: rows - first] = unknown[first:]
            self._sources[self._next : self._next + first] = source
            self._sources[: rows - first] = source
            self._advance(rows)
            self._total += start  # the older ones of a batch larger than the window

    def _advance(self, rows: int) -> None:
        self._next = (self._next + rows) % self.capacity
        self._filled = min(self.capacity, self._filled + rows)
        self._total += rows

    def report(self) -> WindowReport:
        with self._lock:
            held = self._filled
            buckets = self._buckets[:held].copy()
            unknown = self._unknown[:held].copy()
            sources = len(np.unique(self._sources[:held]))
            total = self._total
        judged: list[FeatureDrift] = []
        if held and held >= self.min_records:
            for j, feature in enumerate(self._features):
                counts = np.bincount(buckets[:, j], minlength=feature.buckets)
                judged.append(
                    FeatureDrift(
                        feature=feature.name,
                        psi=psi(feature.expected, counts / held),
                        unknown_share=float(unknown[:, j].mean()),
                        judged=feature.name not in contract.CALENDAR_FEATURES,
                    )
                )
        return WindowReport(
            reference=self.reference.version,
            records=held,
            capacity=self.capacity,
            features=tuple(judged),
            total=total,
            sources=sources,
        )


def _numeric_buckets(feature: FeatureReference, values: Sequence[Any]) -> npt.NDArray[np.int16]:
    """`feature.bucket` of every value at once: bisect_right over the edges, missing last."""
    try:
        numbers = np.array(values, dtype=np.float64)  # None is NaN
    except (TypeError, ValueError):
        raise ValueError(f"feature {feature.name}: values are not numbers") from None
    found = np.searchsorted(np.asarray(feature.edges, dtype=np.float64), numbers, side="right")
    found[np.isnan(numbers)] = feature.buckets - 1
    return found.astype(np.int16)


class _CategoryCodes:
    """A category feature's bucket and unknown flag of whole columns at once: each value the
    reference names (its categories, every known one, the missing value) has its code
    (bucket * 2 + unknown) ready, so a column is one dictionary lookup per value, in C; only
    values the training never saw are judged one by one (once each), by the same
    `FeatureReference` rules as a single record."""

    def __init__(self, feature: FeatureReference) -> None:
        self.feature = feature
        named = [None, *feature.categories, *feature.known]
        self._codes = {value: self._code(value) for value in named}

    def _code(self, value: Any) -> int:
        value = filled(self.feature.name, value)
        return self.feature.bucket(value) * 2 + int(self.feature.unknown(value))

    def code(self, value: Any) -> int:
        """One value's code: a lookup for every value the reference names."""
        found = self._codes.get(value)
        return self._code(value) if found is None else found

    def codes(self, values: Sequence[Any]) -> npt.NDArray[np.int16]:
        if isinstance(values, contract.Categories):  # once per distinct value
            return values.per_row(self.codes(values.values))
        try:
            found = np.fromiter(
                map(self._codes.get, values, itertools.repeat(-1)), np.int16, len(values)
            )
        except TypeError:  # unhashable values cannot be in a validated record
            raise ValueError(f"feature {self.feature.name}: values are not plain") from None
        unseen = np.flatnonzero(found < 0).tolist()
        if unseen:
            judged = {v: self._code(v) for v in dict.fromkeys(values[i] for i in unseen)}
            found[unseen] = [judged[values[i]] for i in unseen]
        return found
