"""The reference distribution of a model version: its training split's 16 features as bucket
shares, written once at training time and logged with the version.

- A category feature (text, booleans, and the integer codes the contract target-encodes:
  beat, district, ward, hour...) keeps its most frequent categories as buckets of their own,
  one "other" bucket for the rest, and a "missing" bucket; every category the training saw is
  listed too, so serving can tell a rare category from one never seen (an unknown one).
- A numeric feature (latitude, longitude) gets a histogram with edges fixed at the training
  split's deciles, plus a "missing" bucket.

The same `Reference.bucket` maps a served value to its bucket, so training and serving can
never bucket a value differently. The document is JSON with a hash of its own content.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from crimes import contract

FORMAT: Final = 1
FILE_NAME: Final = "reference.json"
# Categories with a bucket of their own, per feature: the PSI of a window of N records that
# did not drift is about (buckets - 1) / N, so buckets are kept few enough for windows of a
# few thousand records (about 0.01 at 5,000).
MAX_CATEGORIES: Final = 50
NUMERIC_BINS: Final = 10
OTHER: Final = "__other__"
MISSING: Final = "__missing__"


class InvalidReference(ValueError):
    """A reference document that cannot be read, or that is not the one expected."""


@dataclass(frozen=True)
class FeatureReference:
    """One feature's buckets and the training split's share in each."""

    name: str
    kind: Literal["category", "numeric"]
    # Category buckets: these categories, then OTHER, then MISSING.
    categories: tuple[Any, ...] = ()
    # Every category the training saw (a served category outside it is unknown).
    known: frozenset[Any] = frozenset()
    # Numeric buckets: (-inf, e0), [e0, e1), ... [e_last, inf), then MISSING.
    edges: tuple[float, ...] = ()
    expected: tuple[float, ...] = ()
    _index: dict[Any, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({value: i for i, value in enumerate(self.categories)})

    @property
    def buckets(self) -> int:
        return len(self.expected)

    def bucket(self, value: Any) -> int:
        """The bucket of one served value (validated and normalised by the contract)."""
        if value is None or value != value:  # None, or NaN
            return self.buckets - 1
        if self.kind == "numeric":
            return bisect.bisect_right(self.edges, value)
        return self._index.get(value, len(self.categories))

    def unknown(self, value: Any) -> bool:
        """Whether a served category is one no training record had."""
        return self.kind == "category" and value is not None and value not in self.known

    def as_dict(self) -> dict[str, Any]:
        described: dict[str, Any] = {"kind": self.kind, "expected": list(self.expected)}
        if self.kind == "category":
            described["categories"] = list(self.categories)
            described["known"] = sorted(self.known, key=_sort_key)
        else:
            described["edges"] = list(self.edges)
        return described

    @classmethod
    def from_dict(cls, name: str, value: Mapping[str, Any]) -> FeatureReference:
        kind = value["kind"]
        if kind not in ("category", "numeric"):
            raise InvalidReference(f"feature {name}: unknown kind {kind!r}")
        feature = cls(
            name=name,
            kind=kind,
            categories=tuple(value.get("categories", ())),
            known=frozenset(value.get("known", ())),
            edges=tuple(float(e) for e in value.get("edges", ())),
            expected=tuple(float(p) for p in value["expected"]),
        )
        wanted = len(feature.categories) + 2 if kind == "category" else len(feature.edges) + 2
        if feature.buckets != wanted or abs(sum(feature.expected) - 1) > 1e-6:
            raise InvalidReference(f"feature {name}: its shares do not match its buckets")
        return feature


def _sort_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


@dataclass(frozen=True)
class Reference:
    """The training split's distribution of every contract feature."""

    features: Mapping[str, FeatureReference]
    rows: int
    dataset: str
    contract_version: str = contract.CONTRACT_VERSION

    @property
    def version(self) -> str:
        """A hash of the document's content: equal references share a serving window."""
        return "ref-" + hashlib.sha256(self.dumps()).hexdigest()[:12]

    def dumps(self) -> bytes:
        document = {
            "format": FORMAT,
            "contract_version": self.contract_version,
            "dataset": self.dataset,
            "rows": self.rows,
            "features": {name: f.as_dict() for name, f in self.features.items()},
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def filled(name: str, value: Any) -> Any:
    """A served value as the training data holds it (a missing location description is the
    contract's explicit category there)."""
    if value is None and name == "location_description":
        return contract.MISSING_LOCATION_DESCRIPTION
    return value


def of_features(features: pd.DataFrame, dataset: str) -> Reference:
    """The reference of a training split's raw features (the contract's columns)."""
    frame = contract.as_features_frame(features)
    built = {spec.name: _feature(spec, frame[spec.name]) for spec in contract.FEATURE_SPECS}
    return Reference(features=built, rows=len(frame), dataset=dataset)


def _feature(spec: contract.FeatureSpec, column: pd.Series) -> FeatureReference:
    present = column.dropna()
    missing = (len(column) - len(present)) / max(len(column), 1)
    if spec.encoding == "numeric":
        values = present.to_numpy(dtype=np.float64)
        quantiles = (
            np.quantile(values, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]) if len(values) else []
        )
        edges = tuple(sorted({float(q) for q in quantiles}))
        binned = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        shares = [c / max(len(column), 1) for c in binned.tolist()]
        return FeatureReference(spec.name, "numeric", edges=edges, expected=(*shares, missing))
    counts: dict[Any, int] = {
        _plain(value): int(count) for value, count in present.value_counts().items()
    }
    # The most frequent first; ties by value, so the same data always gives the same buckets.
    ordered = sorted(counts.items(), key=lambda item: (-item[1], _sort_key(item[0])))
    kept = [value for value, _ in ordered[:MAX_CATEGORIES]]
    total = max(len(column), 1)
    shares = [counts[value] / total for value in kept]
    other = sum(count for _, count in ordered[MAX_CATEGORIES:]) / total
    return FeatureReference(
        spec.name,
        "category",
        categories=tuple(kept),
        known=frozenset(counts),
        expected=(*shares, other, missing),
    )


def _plain(value: Any) -> Any:
    """A frame's value as the serving side sees it: Python's bool, int, str."""
    return value.item() if isinstance(value, np.generic) else value


def loads(data: bytes, expected_version: str | None = None) -> Reference:
    """A reference document, checked: its format, the contract it was made under, every
    feature present and well-formed, and its hash when one is expected."""
    try:
        document = json.loads(data)
        if document.get("format") != FORMAT:
            raise InvalidReference(f"format {document.get('format')!r}, expected {FORMAT}")
        foreign = contract.made_under_another(document.get("contract_version"))
        if foreign:
            raise InvalidReference(foreign)
        features = document["features"]
        if sorted(features) != sorted(contract.FEATURES):
            raise InvalidReference("its features are not the contract's")
        reference = Reference(
            features={n: FeatureReference.from_dict(n, features[n]) for n in contract.FEATURES},
            rows=int(document["rows"]),
            dataset=str(document["dataset"]),
        )
    except InvalidReference:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InvalidReference(f"not a reference document: {error!r}") from error
    if expected_version is not None and reference.version != expected_version:
        raise InvalidReference(f"its content is {reference.version}, expected {expected_version}")
    return reference


def psi(expected: Sequence[float], actual: Any, floor: float = 1e-4) -> float:
    """The population stability index of observed shares against expected ones:
    sum((a - e) * ln(a / e)); a share of 0 counts as `floor`, so a bucket empty on one side
    costs a bounded amount, and a bucket empty on both sides nothing."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    return float(np.sum((a - e) * np.log(a / e)))
