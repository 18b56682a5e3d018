"""What the evaluation reads from the data lake: the prediction log, and the labels the ETL's
raw snapshots hold (each record's FBI code as the portal last published it, and when this
system first saw it)."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterable

import pandas as pd

from crimes import contract
from crimes.feedback import served
from crimes.feedback.evaluation import LABEL_COLUMNS
from crimes.feedback.keys import normalise_case_number, normalise_record_id
from crimes.lake import layout
from crimes.lake.storage import Lake, LakeError
from crimes.ops.logs import get_logger

log = get_logger(__name__)

_DAY = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")


def read_log(lake: Lake, since: dt.date | None = None) -> pd.DataFrame:
    """Every row of the prediction log served on `since` or later (all of it when None)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = [
        key
        for key in lake.list(layout.PREDICTION_LOG_PREFIX)
        if key.endswith(".parquet") and _on_or_after(key, since)
    ]
    tables = [pq.read_table(io.BytesIO(lake.read_bytes(key))).cast(served.schema()) for key in keys]
    frame: pd.DataFrame = (
        pa.concat_tables(tables) if tables else served.schema().empty_table()
    ).to_pandas()
    return frame


def _on_or_after(key: str, since: dt.date | None) -> bool:
    found = _DAY.search(key)
    return found is not None and (since is None or found.group(1) >= since.isoformat())


def _safe(normalise: object, value: object) -> str | None:
    try:
        return normalise(value)  # type: ignore[operator,no-any-return]
    except ValueError:
        return None


def read_labels(lake: Lake, years: Iterable[int]) -> pd.DataFrame:
    """Each published record's label (the latest snapshot's), its district and when it was
    first published, from every dataset the ETL published for `years`."""
    snapshots: dict[str, tuple[str, dict[str, object]]] = {}
    for year in sorted(set(years)):
        for key in lake.list(f"{layout.year_prefix(year)}/final"):
            if not key.endswith("/MANIFEST.json"):
                continue
            manifest = lake.read_json(key)
            snapshot = str(manifest["snapshot"])
            published = str(manifest["published_at"])
            earlier = snapshots.get(snapshot)
            if earlier is None or published < earlier[0]:
                snapshots[snapshot] = (published, manifest["files"]["raw"]["crimes.parquet"])
    frames = [
        _snapshot_labels(lake, entry, published)
        for published, entry in sorted(snapshots.values(), key=lambda item: item[0])
    ]
    if not frames:
        return pd.DataFrame(columns=list(LABEL_COLUMNS))
    every = pd.concat(frames, ignore_index=True)
    # A record's label: the latest publication's; when it was labelled: the first's.
    first = every.groupby("record_id", sort=False)["labelled_at"].transform("min")
    latest = every.assign(labelled_at=first).drop_duplicates("record_id", keep="last")
    return latest[list(LABEL_COLUMNS)].reset_index(drop=True)


def _snapshot_labels(lake: Lake, entry: object, published: str) -> pd.DataFrame:
    from crimes.lake import storage

    try:
        data = storage.read_file(lake, entry)  # type: ignore[arg-type]
    except LakeError as error:
        log.warning("evaluation.snapshot_unreadable", error=str(error))
        return pd.DataFrame(columns=list(LABEL_COLUMNS))
    raw = storage.read_parquet_bytes(data)
    raw = raw.set_axis(contract.portal_column_names(raw.columns), axis="columns")
    wanted = {"id", "case_number", contract.TARGET, "district"}
    if not wanted.issubset(raw.columns):
        return pd.DataFrame(columns=list(LABEL_COLUMNS))
    labels = pd.DataFrame(
        {
            "record_id": raw["id"].map(lambda v: _safe(normalise_record_id, v)),
            "case_number": raw["case_number"].map(lambda v: _safe(normalise_case_number, v)),
            "true_code": raw[contract.TARGET].astype("string").str.strip().str.upper(),
            "district": pd.to_numeric(raw["district"], errors="coerce").astype("Int64"),
            "labelled_at": pd.Timestamp(published),
        }
    )
    return labels.dropna(subset=["record_id", "true_code"])
