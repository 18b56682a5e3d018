"""Raw Chicago Data Portal records -> the contract's features and target.

Accepts both real export formats of the portal, column by column, so a mix is fine too:
- the Socrata JSON API: `date` like `2024-12-31T23:58:00.000`, booleans as JSON true/false
  (or their text), `location` as an object (or its JSON text);
- the portal CSV export: `date` like `12/31/2024 11:58:00 PM`, booleans as `true`/`false` text,
  `location` as `POINT (lon lat)` or `(lat, lon)`.

Missing-value policy (the contract's, documented once here):
- no target (`fbi_code`), no parseable `date`, no `id`: the row is dropped;
- `latitude`/`longitude` missing: taken from `location` when it has them, else kept missing and
  imputed with the training median by the fitted transformation;
- `location_description` missing: the explicit category `UNKNOWN`;
- any other feature missing or outside the contract's range: the row is dropped.
Every dropped row is counted under one reason (the first that applies), and logged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pandas as pd

from crimes import contract
from crimes.contract import SchemaError, portal_column_names
from crimes.ops.logs import get_logger

log = get_logger(__name__)

REQUIRED_COLUMNS: Final = (
    "id",
    "date",
    "iucr",
    "primary_type",
    "description",
    "arrest",
    "domestic",
    "beat",
    "district",
    "ward",
    "community_area",
    contract.TARGET,
)
OPTIONAL_COLUMNS: Final = (
    "location_description",
    "latitude",
    "longitude",
    "location",
    "updated_on",
)

_CSV_DATE_FORMAT: Final = "%m/%d/%Y %I:%M:%S %p"
_TRUE: Final = frozenset({"true", "t", "1", "yes", "y"})
_FALSE: Final = frozenset({"false", "f", "0", "no", "n"})
_WKT_POINT = re.compile(r"^\s*POINT\s*\(\s*(\S+)\s+(\S+)\s*\)\s*$", re.IGNORECASE)
_LAT_LON_PAIR = re.compile(r"^\s*\(\s*([^,\s]+)\s*,\s*([^,\s]+)\s*\)\s*$")


def check_columns(columns: Iterable[object]) -> None:
    """SchemaError unless every column the contract needs is there (in either header style)."""
    present = set(portal_column_names(columns))
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        raise SchemaError(f"not Chicago crime records: missing the columns {', '.join(missing)}")


@dataclass
class PreprocessReport:
    rows_in: int
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())


def _text(column: pd.Series) -> pd.Series:
    """Any raw column as stripped text (object dtype) with None for missing or empty values."""
    text = column.astype("string").str.strip()
    text = text.mask(text == "")
    return text.astype("object").where(text.notna(), None)


def parse_timestamps(column: pd.Series) -> pd.Series:
    """Portal timestamps in either export format; NaT where neither parses."""
    text = _text(column)
    iso = pd.to_datetime(text, format="ISO8601", errors="coerce")
    missing = iso.isna() & text.notna()
    if missing.any():
        csv = pd.to_datetime(text[missing], format=_CSV_DATE_FORMAT, errors="coerce")
        iso = iso.astype("datetime64[ns]")
        iso[missing] = csv.astype("datetime64[ns]")
    return iso


def parse_booleans(column: pd.Series) -> pd.Series:
    """JSON booleans or their text -> True/False, None where it is neither."""

    words = {**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)}
    # str(True) is "True": lower-casing makes JSON booleans and their text one case.
    return _text(column).str.lower().map(words).astype("object").where(lambda s: s.notna(), None)


def _parse_location(value: object) -> tuple[float, float] | None:
    """(latitude, longitude) from any of the portal's location formats."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        if isinstance(value, dict):
            return float(value["latitude"]), float(value["longitude"])
        text = str(value).strip()
        if text.startswith("{"):
            obj = json.loads(text)
            return float(obj["latitude"]), float(obj["longitude"])
        if point := _WKT_POINT.match(text):
            return float(point.group(2)), float(point.group(1))
        if pair := _LAT_LON_PAIR.match(text):
            return float(pair.group(1)), float(pair.group(2))
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _integral(column: pd.Series) -> pd.Series:
    """Codes as integers ('0332' -> 332, '12.0' -> 12); NaN where not a whole number."""
    values = pd.to_numeric(_text(column), errors="coerce")
    return values.where(np.isfinite(values) & (values == np.floor(values)))


KEY_COLUMNS: Final = ("id", "case_number", "occurred_at")


def preprocess(raw: pd.DataFrame, *, keys: bool = False) -> tuple[pd.DataFrame, PreprocessReport]:
    """Raw portal rows -> contract features + target, sorted by record id, deduplicated; with
    `keys`, also each record's `id`, `case_number` and `occurred_at` (what a replay sends with
    its records, never features)."""
    raw = raw.set_axis(portal_column_names(raw.columns), axis="columns")
    check_columns(raw.columns)
    report = PreprocessReport(rows_in=len(raw))
    frame = raw.reset_index(drop=True)
    reason = pd.Series(None, index=frame.index, dtype="object")

    def drop_where(mask: pd.Series, why: str) -> None:
        nonlocal reason
        reason = reason.mask(mask & reason.isna(), why)

    record_id = _text(frame["id"])
    updated_on = (
        parse_timestamps(frame["updated_on"])
        if "updated_on" in frame
        else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    )
    drop_where(record_id.isna(), "missing_id")

    # The portal republishes a record when it is updated: keep only its latest version.
    order = (
        pd.DataFrame({"id": record_id, "updated_on": updated_on, "pos": frame.index})
        .sort_values(["id", "updated_on", "pos"], na_position="first", kind="stable")
        .dropna(subset=["id"])
    )
    older = order.duplicated(subset=["id"], keep="last")
    drop_where(older.reindex(frame.index, fill_value=False), "duplicate")

    when = parse_timestamps(frame["date"])
    drop_where(when.isna(), "bad_date")

    target = _text(frame[contract.TARGET]).str.upper()
    drop_where(target.isna(), "missing_target")

    out = pd.DataFrame(index=frame.index)
    # The contract's text rule (strip, upper case, blank is missing), as the API applies it.
    for name in contract.TEXT_FEATURES:
        out[name] = (
            contract.normalise_text_column(frame[name])
            if name in frame
            else pd.Series(None, index=frame.index, dtype="object")
        )
    for name in ("arrest", "domestic"):
        out[name] = parse_booleans(frame[name])
        drop_where(out[name].isna(), f"bad_{name}")
    for name in ("beat", "district", "ward", "community_area"):
        text = _text(frame[name])
        out[name] = _integral(frame[name])
        drop_where(text.isna(), f"missing_{name}")
        drop_where(out[name].isna(), f"bad_{name}")

    location = (
        frame["location"].map(_parse_location)
        if "location" in frame
        else pd.Series(None, index=frame.index, dtype="object")
    )
    for position, name in enumerate(("latitude", "longitude")):
        text = _text(frame[name]) if name in frame else pd.Series(None, index=frame.index)
        values = pd.to_numeric(text, errors="coerce")
        drop_where(text.notna() & values.isna(), f"bad_{name}")
        from_location = location.map(lambda p, i=position: p[i] if isinstance(p, tuple) else np.nan)
        out[name] = values.fillna(from_location.astype("float64"))

    out["mes"] = when.dt.month
    out["dia_mes"] = when.dt.day
    out["dia_semana"] = when.dt.day_of_week
    out["hora"] = when.dt.hour

    reason = reason.fillna(contract.out_of_contract(out))

    kept = reason.isna()
    report.dropped = {str(k): int(v) for k, v in reason[~kept].value_counts().sort_index().items()}
    if report.dropped:
        examples = record_id[~kept & record_id.notna()].head(5).tolist()
        log.warning("preprocess.dropped_rows", dropped=report.dropped, example_ids=examples)

    result = out[kept].copy()
    result[contract.TARGET] = target[kept]
    extra = pd.DataFrame(
        {
            "id": record_id[kept],
            "case_number": _text(frame["case_number"])[kept]
            if "case_number" in frame
            else pd.Series(None, index=result.index, dtype="object"),
            "occurred_at": when[kept],
        }
    )
    # Sorting by record id makes the output, and so the split, independent of download order.
    result["_id_num"] = pd.to_numeric(record_id[kept], errors="coerce")
    result["_id"] = record_id[kept]
    by_id = result.sort_values(["_id_num", "_id"], kind="stable").index
    result = result.loc[by_id].drop(columns=["_id_num", "_id"]).reset_index(drop=True)
    features = contract.as_features_frame(result)
    features[contract.TARGET] = result[contract.TARGET].astype("str")
    if keys:
        ordered = extra.loc[by_id].reset_index(drop=True)
        for key in KEY_COLUMNS:
            features[key] = ordered[key]
    report.rows_out = len(features)
    log.info(
        "preprocess.done",
        rows_in=report.rows_in,
        rows_out=report.rows_out,
        rows_dropped=report.rows_dropped,
    )
    return features, report
