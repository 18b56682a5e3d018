"""The feature contract: the one definition of a crime record's model features and target.

The ETL, the training, the gateway and the tests import this module; nothing else names a
column. The pydantic model `CrimeFeatures` is the single source of each feature's type and
range: the vectorised checks that the ETL runs over whole frames read their bounds from it, so
the API can never accept a value the training data could not contain, or the other way round.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, cast, overload

import annotated_types
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

if TYPE_CHECKING:  # pandas is imported where frames are made: the services never load it
    import pandas as pd

Encoding = Literal["numeric", "onehot", "target"]

TARGET: Final = "fbi_code"

# A missing location description is a fact about the report, not an error: it becomes this
# explicit category (the portal never uses it), so training and serving treat it the same way.
MISSING_LOCATION_DESCRIPTION: Final = "UNKNOWN"


class SchemaError(ValueError):
    """Raw data that lacks columns the contract needs: nothing can be made of it."""


def portal_column_name(header: object) -> str:
    """A column as the Socrata API names it, from either export: the portal's Export button
    writes readable headers ("Case Number", "FBI Code", "X Coordinate"), the API snake_case."""
    return re.sub(r"[^0-9a-z]+", "_", str(header).strip().lower()).strip("_")


def portal_column_names(headers: Iterable[object]) -> list[str]:
    names = [portal_column_name(h) for h in headers]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SchemaError(f"columns {repeated} appear twice (in both header styles?)")
    return names


def _feature(encoding: Encoding, description: str, **constraints: Any) -> Any:
    return Field(description=description, json_schema_extra={"encoding": encoding}, **constraints)


def normalise_text(value: Any) -> Any:
    """The contract's text rule, wherever a record comes from (the portal, a REST client, a
    gRPC client): surrounding whitespace stripped, upper case, and text that is empty or only
    whitespace is a missing value. What is not text is left for validation to judge."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    return text.upper() if text else None


# The longest text any feature may hold (the portal's longest is 60 characters). Not part of
# CONTRACT_VERSION: no transformation depends on it (a longer text would be an unknown
# category), it bounds what a client can make the system carry.
MAX_TEXT_LENGTH: Final = 200


def _capped(text: Any) -> Any:
    if isinstance(text, str) and len(text) > MAX_TEXT_LENGTH:
        raise ValueError(f"has {len(text)} characters, at most {MAX_TEXT_LENGTH}")
    return text


def _required_text(value: Any) -> Any:
    normalised = normalise_text(value)
    if normalised is None and isinstance(value, str):
        raise ValueError("is empty or only whitespace: this feature is required")
    return _capped(normalised)


def _optional_text(value: Any) -> Any:
    return _capped(normalise_text(value))


def normalise_text_column(column: pd.Series) -> pd.Series:
    """`normalise_text` over a whole column (object dtype, None where missing)."""
    text = column.astype("string").str.strip()
    text = text.mask(text == "").str.upper()
    return text.astype("object").where(text.notna(), None)


# Text features: normalised before their type and bounds are checked. Listed after a required
# feature's Field, so its length bounds stay those of a string (and say "characters").
_RequiredText = BeforeValidator(_required_text)
_OptionalText = BeforeValidator(_optional_text)


class CrimeFeatures(BaseModel):
    """The 16 raw model features of one crime record, as a client sends them.

    Text features are normalised first (`normalise_text`): `" theft "` is `"THEFT"`, and a
    location description of only whitespace is not recorded.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    iucr: Annotated[
        str,
        _feature(
            "target",
            "Illinois Uniform Crime Reporting code, 4 characters with leading zeros ('0460').",
            min_length=4,
            max_length=4,
        ),
        _RequiredText,
    ]
    primary_type: Annotated[
        str,
        _feature("target", "Primary description of the IUCR code.", min_length=1),
        _RequiredText,
    ]
    description: Annotated[
        str,
        _feature("target", "Secondary description of the IUCR code.", min_length=1),
        _RequiredText,
    ]
    location_description: Annotated[
        str | None,
        _OptionalText,
        # No min_length: blank text is a missing value here, never an error.
        _feature(
            "target",
            "Where the incident happened; null (or blank) means not recorded "
            f"('{MISSING_LOCATION_DESCRIPTION}').",
        ),
    ] = None
    arrest: Annotated[StrictBool, _feature("onehot", "Whether an arrest was made.")]
    domestic: Annotated[StrictBool, _feature("onehot", "Whether the incident was domestic.")]
    beat: Annotated[int, _feature("target", "Police beat ('0332' is 332).", ge=1, le=9999)]
    district: Annotated[int, _feature("target", "Police district ('003' is 3).", ge=1, le=999)]
    ward: Annotated[int, _feature("target", "City Council ward.", ge=1, le=99)]
    community_area: Annotated[int, _feature("target", "Community area.", ge=1, le=99)]
    latitude: Annotated[
        float | None,
        _feature("numeric", "Latitude (block-shifted); null is imputed.", ge=-90, le=90),
    ] = None
    longitude: Annotated[
        float | None,
        _feature("numeric", "Longitude (block-shifted); null is imputed.", ge=-180, le=180),
    ] = None
    mes: Annotated[int, _feature("target", "Month of the incident, 1..12.", ge=1, le=12)]
    dia_mes: Annotated[int, _feature("target", "Day of the month, 1..31.", ge=1, le=31)]
    dia_semana: Annotated[
        int, _feature("onehot", "Day of the week, Monday=0 .. Sunday=6.", ge=0, le=6)
    ]
    hora: Annotated[int, _feature("target", "Hour of the day, 0..23.", ge=0, le=23)]


@dataclass(frozen=True)
class FeatureSpec:
    """What the contract says about one feature, read off `CrimeFeatures`."""

    name: str
    kind: Literal["text", "int", "bool", "float"]
    encoding: Encoding
    nullable: bool
    minimum: float | None
    maximum: float | None
    min_length: int | None
    max_length: int | None


def _spec(name: str) -> FeatureSpec:
    field = CrimeFeatures.model_fields[name]
    annotation = str(field.annotation)
    kind: Literal["text", "int", "bool", "float"]
    if "str" in annotation:
        kind = "text"
    elif "bool" in annotation:
        kind = "bool"
    elif "float" in annotation:
        kind = "float"
    else:
        kind = "int"
    bounds: dict[str, Any] = {}
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["minimum"] = item.ge
        elif isinstance(item, annotated_types.Le):
            bounds["maximum"] = item.le
        elif isinstance(item, annotated_types.MinLen):
            bounds["min_length"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            bounds["max_length"] = item.max_length
    extra = field.json_schema_extra
    assert isinstance(extra, dict)
    encoding = cast(Encoding, extra["encoding"])
    assert encoding in ("numeric", "onehot", "target")
    return FeatureSpec(
        name=name,
        kind=kind,
        encoding=encoding,
        nullable="None" in annotation,
        minimum=bounds.get("minimum"),
        maximum=bounds.get("maximum"),
        min_length=bounds.get("min_length"),
        max_length=bounds.get("max_length"),
    )


FEATURE_SPECS: Final[tuple[FeatureSpec, ...]] = tuple(_spec(n) for n in CrimeFeatures.model_fields)
FEATURES: Final[tuple[str, ...]] = tuple(s.name for s in FEATURE_SPECS)
SPEC_BY_NAME: Final[Mapping[str, FeatureSpec]] = {s.name: s for s in FEATURE_SPECS}
NUMERIC_FEATURES: Final = tuple(s.name for s in FEATURE_SPECS if s.encoding == "numeric")
TEXT_FEATURES: Final = tuple(s.name for s in FEATURE_SPECS if s.kind == "text")
ONEHOT_FEATURES: Final = tuple(s.name for s in FEATURE_SPECS if s.encoding == "onehot")
TARGET_ENCODED_FEATURES: Final = tuple(s.name for s in FEATURE_SPECS if s.encoding == "target")
CATEGORICAL_FEATURES: Final = ONEHOT_FEATURES + TARGET_ENCODED_FEATURES
# Features that say where in the year a record falls. A window of live records covers a few
# days of the calendar, so their distribution differs from a year of training by design, not
# by drift: drift is reported for them but never judged on them.
CALENDAR_FEATURES: Final = ("mes", "dia_mes")

# pandas dtypes of a features frame; nullable floats carry NaN, never None.
_DTYPES: Final[Mapping[str, str]] = {
    "text": "str",
    "int": "int64",
    "bool": "bool",
    "float": "float64",
}
FEATURE_DTYPES: Final[Mapping[str, str]] = {s.name: _DTYPES[s.kind] for s in FEATURE_SPECS}


def _version() -> str:
    """A hash of what the contract says (features, kinds, encodings, bounds, target, the
    missing-location category): a transformation made for another contract is refused."""
    said = {
        "features": [asdict(spec) for spec in FEATURE_SPECS],
        "target": TARGET,
        "missing_location_description": MISSING_LOCATION_DESCRIPTION,
    }
    text = json.dumps(said, sort_keys=True, separators=(",", ":"))
    return "contract-" + hashlib.sha256(text.encode()).hexdigest()[:12]


CONTRACT_VERSION: Final = _version()


def made_under_another(contract_version: Any) -> str | None:
    """Why a document (a transformation, a drift reference) that names the contract it was
    made under cannot be used with this one; None when it can."""
    if contract_version == CONTRACT_VERSION:
        return None
    return f"made for contract {contract_version!r}, this is {CONTRACT_VERSION}"


def out_of_contract(frame: pd.DataFrame) -> pd.Series:
    """For each row of a features frame, the first feature that breaks the contract, or None.

    Vectorised twin of validating every row with `CrimeFeatures`: same bounds, read from it.
    """
    import pandas as pd

    reason = pd.Series(None, index=frame.index, dtype="object")
    for spec in FEATURE_SPECS:
        column = frame[spec.name]
        bad = column.isna() if not spec.nullable else pd.Series(False, index=frame.index)
        present = column.notna()
        if spec.kind == "text":
            lengths = column.str.len()
            bad |= present & _outside(lengths, *_limits(spec), finite=False)
            bad |= present & (lengths > MAX_TEXT_LENGTH)
        elif spec.kind in ("int", "float"):
            values = pd.to_numeric(column, errors="coerce")
            bad |= present & _outside(values, *_limits(spec), finite=spec.kind == "float")
        reason = reason.mask(bad & reason.isna(), f"out_of_range_{spec.name}")
    return reason.where(reason.notna(), None)


def _limits(spec: FeatureSpec) -> tuple[float, float]:
    """The range a feature's values must lie in (its length's, for text); NaN where the
    contract sets no bound (a comparison with NaN is never true)."""
    low, high = (
        (spec.min_length, spec.max_length) if spec.kind == "text" else (spec.minimum, spec.maximum)
    )
    return (np.nan if low is None else float(low), np.nan if high is None else float(high))


_LIMITS: Final = {spec.name: _limits(spec) for spec in FEATURE_SPECS}


def _outside(values: Any, low: float, high: float, *, finite: bool) -> Any:
    """The contract's range rule, written once: where values (numbers, or text lengths) are
    below `low` or above `high`, or not finite when `finite` numbers are required. Plain
    comparisons, so it holds for a pandas column and for one Python number alike; callers
    leave out the missing values."""
    bad = (values < low) | (values > high)
    if finite:
        bad = bad | (values != values) | (abs(values) == np.inf)
    return bad


def feature_columns(records: Sequence[Mapping[str, Any]]) -> dict[str, Sequence[Any]]:
    """Records (dicts of features) as one sequence per feature, in the contract's order; a
    feature a record leaves out is None there."""
    values: list[Sequence[Any]]
    try:
        # Every feature present (validated records): one C-level pass over the records.
        values = list(zip(*map(operator.itemgetter(*FEATURES), records), strict=True))
    except KeyError:
        values = [[record.get(name) for record in records] for name in FEATURES]
    if not values:
        values = [() for _ in FEATURES]
    return dict(zip(FEATURES, values, strict=True))


def features_frame(records: list[CrimeFeatures]) -> pd.DataFrame:
    """Validated records as a features frame with the contract's dtypes."""
    import pandas as pd

    frame = pd.DataFrame([r.model_dump() for r in records], columns=list(FEATURES))
    return as_features_frame(frame)


def as_features_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Give a frame that already holds valid features the contract's column order and dtypes."""
    import pandas as pd

    out = frame.loc[:, list(FEATURES)].copy()
    out["location_description"] = out["location_description"].fillna(MISSING_LOCATION_DESCRIPTION)
    for name in NUMERIC_FEATURES:
        out[name] = pd.to_numeric(out[name], errors="raise").astype("float64")
    return out.astype(dict(FEATURE_DTYPES))


class ContractViolation(ValueError):
    """A value outside the contract, named by feature and row (0-based)."""

    def __init__(self, feature: str, row: int, message: str) -> None:
        super().__init__(f"input '{feature}' row {row}: {message}")
        self.feature = feature
        self.row = row


class Categories(Sequence[Any]):
    """A column of a categorical feature as its distinct values and each row's index into
    them: a batch holds few distinct categories, so whatever looks values up (the
    transformation, the drift window) does it once per distinct value, not once per row.
    A sequence of the row values like any other column (equal to a list of the same values)."""

    __slots__ = ("codes", "values")

    def __init__(self, values: list[Any], codes: npt.NDArray[np.intp]) -> None:
        self.values = values
        self.codes = codes

    def per_row(self, found: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """What was found for each distinct value (an array in `values`' order), per row."""
        return found.take(self.codes)

    def __len__(self) -> int:
        return len(self.codes)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> Categories: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return Categories(self.values, self.codes[index])
        return self.values[self.codes[index]]

    def __iter__(self) -> Iterator[Any]:
        return map(self.values.__getitem__, self.codes.tolist())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the list it stands for

    def __repr__(self) -> str:
        return f"Categories({list(self)!r})"


def validate_columns(columns: Mapping[str, Any], rows: int) -> dict[str, Sequence[Any]]:
    """Records given column by column (text as str or None, bools, ints, floats with NaN for
    missing), checked by the same rules as `CrimeFeatures` and normalised as it normalises;
    plain Python values per feature: a categorical feature's column as `Categories`, a numeric
    one's as a list. Optional features may be absent (all missing).

    A column is judged by its distinct values, or its smallest and largest (cheap for one
    record and for thousands); only a column that breaks a rule is searched for its first
    bad row, which the ContractViolation names."""
    checked: dict[str, Sequence[Any]] = {}
    for spec in FEATURE_SPECS:
        values = columns.get(spec.name)
        if values is None:
            if not spec.nullable:
                raise ContractViolation(spec.name, 0, "the feature is required")
            checked[spec.name] = [None] * rows
            continue
        if len(values) != rows:
            raise ContractViolation(spec.name, 0, f"{len(values)} values for {rows} rows")
        plain = values.tolist() if isinstance(values, np.ndarray) else values
        checked[spec.name] = (
            _checked_numbers(spec, list(plain))
            if spec.encoding == "numeric"
            else _checked_categories(spec, plain)
        )
    return checked


def _checked_numbers(spec: FeatureSpec, values: list[Any]) -> list[Any]:
    """A numeric column, judged in numpy: missing values (None, NaN) are None."""
    if spec.kind != "float":
        return _checked_column(spec, values)
    try:
        numbers = np.array(values, dtype=np.float64)  # None is NaN
    except (TypeError, ValueError):  # not all numbers: judged one by one
        return _checked_column(spec, values)
    missing = np.isnan(numbers)
    gaps = int(np.count_nonzero(missing))
    if gaps > values.count(None):  # some NaN given: missing too
        values = [None if v != v else v for v in values]
    if gaps and not spec.nullable:
        raise ContractViolation(spec.name, int(np.argmax(missing)), "is missing (NaN)")
    if gaps < len(values):
        present = numbers[~missing] if gaps else numbers
        if _breaks(spec, float(present.min()), float(present.max())):
            _raise_first(spec, values)
    return values


def _checked_categories(spec: FeatureSpec, values: Sequence[Any]) -> Sequence[Any]:
    """A categorical column checked and normalised once per distinct value, as `Categories`
    (keyed as the transformation's tables are: by value, so 1 and True are one key)."""
    try:
        index = dict.fromkeys(values, 0)
    except TypeError:  # values that cannot be a key are judged one by one (none is valid)
        return _checked_column(spec, list(values))
    for position, value in enumerate(index):
        index[value] = position
    try:
        distinct = _checked_column(spec, list(index))
    except ContractViolation:
        _checked_column(spec, list(values))  # raises, naming the first bad row of the column
        raise
    codes = np.fromiter(map(index.__getitem__, values), dtype=np.intp, count=len(values))
    return Categories(distinct, codes)


def _checked_column(spec: FeatureSpec, values: list[Any]) -> list[Any]:
    if spec.kind == "bool":
        return list(map(bool, values))
    if spec.kind == "text":
        values = [normalise_text(v) for v in values]
        if not spec.nullable and None in values:
            raise ContractViolation(spec.name, values.index(None), "is empty or only whitespace")
        present = [len(v) for v in values if v is not None]
        longest = max(present, default=0)
        if longest > MAX_TEXT_LENGTH:
            row = next(i for i, v in enumerate(values) if v is not None and len(v) == longest)
            raise ContractViolation(
                spec.name, row, f"has {longest} characters, at most {MAX_TEXT_LENGTH}"
            )
    elif spec.kind == "float":
        values = [None if v != v else v for v in values]  # NaN: missing
        present = [v for v in values if v is not None]
        if not spec.nullable and len(present) < len(values):
            raise ContractViolation(spec.name, values.index(None), "is missing (NaN)")
    else:
        present = values
    if present and _breaks(spec, min(present), max(present)):
        _raise_first(spec, values)
    return values


def _breaks(spec: FeatureSpec, value: Any, other: Any | None = None) -> bool:
    """Whether a value (a text's length), or either of two, breaks the feature's range."""
    low, high = _LIMITS[spec.name]
    finite = spec.kind == "float"
    return bool(_outside(value, low, high, finite=finite)) or (
        other is not None and bool(_outside(other, low, high, finite=finite))
    )


def _raise_first(spec: FeatureSpec, values: list[Any]) -> None:
    for row, value in enumerate(values):
        if value is None:
            continue
        if spec.kind == "text" and _breaks(spec, len(value)):
            raise ContractViolation(
                spec.name,
                row,
                f"{value!r} has {len(value)} characters, expected "
                f"{spec.min_length}..{spec.max_length}",
            )
        if spec.kind != "text" and _breaks(spec, value):
            raise ContractViolation(
                spec.name, row, f"{value} is outside {spec.minimum}..{spec.maximum}"
            )


# The reference's example record (its answer is 07 from both models): the OpenAPI example,
# the demo's first question, and a row every exported model must label as its original does.
EXAMPLE_RECORD: Final[Mapping[str, Any]] = {
    "arrest": False,
    "beat": 412,
    "community_area": 46,
    "description": "THEFT / RECOVERY - AUTOMOBILE",
    "dia_mes": 4,
    "dia_semana": 1,
    "district": 4,
    "domestic": False,
    "hora": 5,
    "iucr": "0930",
    "latitude": 41.743747398,
    "location_description": "STREET",
    "longitude": -87.566115082,
    "mes": 6,
    "primary_type": "MOTOR VEHICLE THEFT",
    "ward": 7,
}
