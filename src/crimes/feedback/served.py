"""The prediction log's rows: one per answered record and model, as the gateway served it.

A `Served` is one model's answers for the records of one request (or one shadow call), kept by
reference on the request path (no copy, no per-row work); the writer turns many of them into
one Arrow table per served day and model, off that path.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from crimes.feedback.keys import RecordKeys

if TYPE_CHECKING:  # pyarrow is imported by the writer's thread, never on a request
    import pyarrow as pa

CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"

# The log's columns, in order (the evaluation reads these names).
COLUMNS: Final = (
    "request_id",
    "served_at",
    "row",
    "record_id",
    "case_number",
    "model",
    "model_name",
    "role",
    "model_version",
    "transformation_version",
    "fbi_code",
    "confidence",
)


@dataclass(frozen=True)
class Served:
    """One model's answers for the records of one request: what the log keeps of them."""

    request_id: str
    served_at: float  # seconds since the epoch (UTC)
    kind: str  # dtc | lda
    model_name: str
    role: str  # champion | challenger
    model_version: str
    transformation_version: str
    codes: Sequence[str]
    confidence: npt.NDArray[np.float32] | None = None
    keys: RecordKeys | None = None
    first_row: int = 0  # the position of its first record in the request

    @property
    def rows(self) -> int:
        return len(self.codes)

    @property
    def day(self) -> str:
        return dt.datetime.fromtimestamp(self.served_at, dt.UTC).strftime("%Y-%m-%d")


# The columns whose value is a part's own (one per request and model): written dictionary-
# encoded, as built, so that neither the writer nor Parquet hashes them row by row.
PER_PART: Final = frozenset(
    {"request_id", "model", "model_name", "role", "model_version", "transformation_version"}
)


def schema(*, written: bool = False) -> pa.Schema:
    """The log's columns as readers get them (plain strings), or as the writer stores them."""
    import pyarrow as pa

    text = pa.string()
    per_part = pa.dictionary(pa.int32(), text) if written else text
    return pa.schema(
        [
            ("request_id", per_part),
            ("served_at", pa.timestamp("ms", tz="UTC")),
            ("row", pa.int32()),
            ("record_id", text),
            ("case_number", text),
            ("model", per_part),
            ("model_name", per_part),
            ("role", per_part),
            ("model_version", per_part),
            ("transformation_version", per_part),
            ("fbi_code", text),
            ("confidence", pa.float32()),
        ]
    )


def table(parts: Sequence[Served]) -> pa.Table:
    """Many answers as one table, a row per record, in the order given. Built column by column:
    a part's constant values (its request, model, versions, time) are repeated by numpy and
    Arrow, never row by row in Python; per part, only list extensions run in Python. The log
    runs in the gateway's process, so its cost is the answers' cost."""
    import pyarrow as pa

    counts = np.fromiter((part.rows for part in parts), dtype=np.int64, count=len(parts))
    owner = pa.array(np.repeat(np.arange(len(parts), dtype=np.int32), counts))

    def constant(values: list[str]) -> pa.Array:
        # A dictionary of one value per part (repeated values are Parquet's to fold).
        return pa.DictionaryArray.from_arrays(owner, pa.array(values, pa.string()))

    def flattened(values: list[Sequence[str | None]]) -> pa.Array:
        return pa.array(list(itertools.chain.from_iterable(values)), pa.string())

    starts = np.repeat(np.cumsum(counts) - counts, counts)
    first = np.repeat(np.fromiter((p.first_row for p in parts), np.int64, len(parts)), counts)
    millis = np.fromiter((int(p.served_at * 1000) for p in parts), np.int64, len(parts))
    columns = [
        constant([part.request_id for part in parts]),
        pa.array(np.repeat(millis, counts).astype("datetime64[ms]")).cast(
            pa.timestamp("ms", tz="UTC")
        ),
        pa.array((np.arange(len(starts)) - starts + first).astype(np.int32)),
        flattened([p.keys.ids if p.keys else [None] * p.rows for p in parts]),
        flattened([p.keys.case_numbers if p.keys else [None] * p.rows for p in parts]),
        constant([part.kind for part in parts]),
        constant([part.model_name for part in parts]),
        constant([part.role for part in parts]),
        constant([part.model_version for part in parts]),
        constant([part.transformation_version for part in parts]),
        flattened([part.codes for part in parts]),
        pa.array(
            np.concatenate(
                [
                    np.full(p.rows, np.nan, np.float32) if p.confidence is None else p.confidence
                    for p in parts
                ]
            ).astype(np.float32),
            from_pandas=True,  # NaN: the model gave none
        )
        if parts
        else pa.array([], pa.float32()),
    ]
    return pa.Table.from_arrays(columns, schema=schema(written=True))
