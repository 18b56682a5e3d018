"""The fitted transformation as data: one canonical JSON document, its version the hash of it.

Every output column of the fitted transformation depends on one input feature only, so the
document says, per feature:
- numeric (latitude, longitude): its output column, the training median that imputes a
  missing value, and MinMax's `scale` and `min` (`value * scale + min`);
- categorical (one-hot and target-encoded): its output columns, each known category with its
  output values, and the values of a category no training row had.
It also names every output column in order and the feature contract it was made for.

The ETL writes it (`fitting.export`), every model version's run and bundle carry it, and the
gateway and the model services load it instead of a pickle: `loads` checks the hash against the
version asked for and the structure against the contract before anything is built from it.
Floats are written as Python's shortest round-trip form, so the values read back are the fitted
pipeline's to the last bit.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Final

from crimes import contract

FORMAT: Final = "crimes.transformation/1"
VERSION_PREFIX: Final = "tf-"
FILE_NAME: Final = "transformation.json"
# Far above a real document (about 1 MB for the 2024 data), far below what would hurt to parse.
MAX_BYTES: Final = 64 * 1024 * 1024

Category = str | int | bool


class DocumentError(ValueError):
    """Not a transformation document this project can use, or not the version asked for."""


@dataclass(frozen=True)
class NumericFeature:
    feature: str
    column: int
    median: float
    scale: float
    min: float


@dataclass(frozen=True)
class CategoricalFeature:
    feature: str
    encoding: str
    columns: tuple[int, ...]
    categories: tuple[tuple[Category, tuple[float, ...]], ...]
    unknown: tuple[float, ...]


@dataclass(frozen=True)
class TransformationDocument:
    """A checked document: its version, what it says, and its exact bytes."""

    version: str
    contract_version: str
    output_columns: tuple[str, ...]
    numeric: tuple[NumericFeature, ...]
    categorical: tuple[CategoricalFeature, ...]
    data: bytes

    @property
    def n_outputs(self) -> int:
        return len(self.output_columns)


def canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def version_of(data: bytes) -> str:
    return VERSION_PREFIX + hashlib.sha256(data).hexdigest()[:16]


def build(
    output_columns: list[str],
    numeric: list[NumericFeature],
    categorical: list[CategoricalFeature],
) -> TransformationDocument:
    """The document of a fitted transformation (what `fitting.export` gives it)."""
    value = {
        "format": FORMAT,
        "contract_version": contract.CONTRACT_VERSION,
        "output_columns": list(output_columns),
        "numeric": [
            {
                "feature": n.feature,
                "column": n.column,
                "median": n.median,
                "scale": n.scale,
                "min": n.min,
            }
            for n in numeric
        ],
        "categorical": [
            {
                "feature": c.feature,
                "encoding": c.encoding,
                "columns": list(c.columns),
                "categories": [[category, list(values)] for category, values in c.categories],
                "unknown": list(c.unknown),
            }
            for c in categorical
        ],
    }
    return loads(canonical(value))


def loads(data: bytes, expected_version: str | None = None) -> TransformationDocument:
    """A document from its bytes, checked: its hash (when a version is expected), then every
    part of it against the contract. DocumentError says what is wrong."""
    if len(data) > MAX_BYTES:
        raise DocumentError(f"{len(data)} bytes: more than a transformation document can be")
    version = version_of(data)
    if expected_version is not None and version != expected_version:
        raise DocumentError(
            f"the document's hash is {version}, {expected_version} was asked for: "
            "another or an altered transformation"
        )
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DocumentError(f"not JSON: {error}") from error
    return _checked(value, version, data)


def _checked(value: Any, version: str, data: bytes) -> TransformationDocument:
    document = _object(value, "the document")
    if document.get("format") != FORMAT:
        raise DocumentError(f"format {document.get('format')!r}, expected {FORMAT!r}")
    foreign = contract.made_under_another(document.get("contract_version"))
    if foreign:
        raise DocumentError(foreign)
    columns = document.get("output_columns")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise DocumentError("output_columns must be a list of names")
    if len(set(columns)) != len(columns) or not columns:
        raise DocumentError("output_columns must be distinct, and at least one")
    width = len(columns)
    numeric = tuple(_numeric(item, width) for item in _list(document, "numeric"))
    if tuple(n.feature for n in numeric) != contract.NUMERIC_FEATURES:
        raise DocumentError(f"numeric features must be {list(contract.NUMERIC_FEATURES)}")
    categorical = tuple(_categorical(item, width) for item in _list(document, "categorical"))
    if tuple(c.feature for c in categorical) != contract.CATEGORICAL_FEATURES:
        raise DocumentError(f"categorical features must be {list(contract.CATEGORICAL_FEATURES)}")
    used = [n.column for n in numeric] + [i for c in categorical for i in c.columns]
    if sorted(used) != list(range(width)):
        raise DocumentError("every output column must come from exactly one feature")
    return TransformationDocument(
        version=version,
        contract_version=str(document["contract_version"]),
        output_columns=tuple(columns),
        numeric=numeric,
        categorical=categorical,
        data=data,
    )


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DocumentError(f"{what} must be an object")
    return value


def _list(document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key)
    if not isinstance(value, list):
        raise DocumentError(f"{key} must be a list")
    return value


def _column(value: Any, width: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < width:
        raise DocumentError(f"{where}: column {value!r} is not one of the {width} outputs")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DocumentError(f"{where}: {value!r} is not a finite number")
    return float(value)


def _numbers(value: Any, count: int, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != count:
        raise DocumentError(f"{where}: expected {count} numbers")
    return tuple(_number(v, where) for v in value)


def _numeric(item: Any, width: int) -> NumericFeature:
    entry = _object(item, "a numeric feature")
    feature = str(entry.get("feature"))
    where = f"numeric feature {feature!r}"
    return NumericFeature(
        feature=feature,
        column=_column(entry.get("column"), width, where),
        median=_number(entry.get("median"), where),
        scale=_number(entry.get("scale"), where),
        min=_number(entry.get("min"), where),
    )


_KINDS: Final[dict[str, type[Category]]] = {"text": str, "int": int, "bool": bool}


def _category(value: Any, kind: str, where: str) -> Category:
    # bool is an int in Python: an int feature must not take true/false, nor the other way.
    if type(value) is not _KINDS[kind]:
        raise DocumentError(f"{where}: category {value!r} is not of the feature's kind ({kind})")
    return value


def _categorical(item: Any, width: int) -> CategoricalFeature:
    entry = _object(item, "a categorical feature")
    feature = str(entry.get("feature"))
    where = f"categorical feature {feature!r}"
    spec = contract.SPEC_BY_NAME.get(feature)
    if spec is None:
        raise DocumentError(f"{where} is not in the contract")
    if entry.get("encoding") != spec.encoding:
        raise DocumentError(f"{where}: encoding must be {spec.encoding!r}")
    raw_columns = entry.get("columns")
    if not isinstance(raw_columns, list) or not raw_columns:
        raise DocumentError(f"{where}: columns must be a non-empty list")
    columns = tuple(_column(c, width, where) for c in raw_columns)
    categories = []
    seen: set[Category] = set()
    for pair in _list(entry, "categories"):
        if not isinstance(pair, list) or len(pair) != 2:
            raise DocumentError(f"{where}: each category is [value, [outputs]]")
        category = _category(pair[0], spec.kind, where)
        if category in seen:
            raise DocumentError(f"{where}: category {category!r} appears twice")
        seen.add(category)
        categories.append((category, _numbers(pair[1], len(columns), where)))
    return CategoricalFeature(
        feature=feature,
        encoding=spec.encoding,
        columns=columns,
        categories=tuple(categories),
        unknown=_numbers(entry.get("unknown"), len(columns), where),
    )
