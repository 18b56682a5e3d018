"""The prediction log's rows: one per answered record and model, as the gateway served it.

A `Served` is one model's answers for the records of one request (or one shadow call), kept by
reference on the request path (no copy, no per-row work); the writer turns many of them into
one Arrow table per served day and model, off that path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

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


def schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("request_id", pa.string()),
            ("served_at", pa.timestamp("ms", tz="UTC")),
            ("row", pa.int32()),
            ("record_id", pa.string()),
            ("case_number", pa.string()),
            ("model", pa.string()),
            ("model_name", pa.string()),
            ("role", pa.string()),
            ("model_version", pa.string()),
            ("transformation_version", pa.string()),
            ("fbi_code", pa.string()),
            ("confidence", pa.float32()),
        ]
    )


def table(parts: Sequence[Served]) -> pa.Table:
    """Many answers as one table, a row per record, in the order given."""
    import pyarrow as pa

    count = sum(part.rows for part in parts)

    def repeated(value: Any, part: Served) -> list[Any]:
        return [value] * part.rows

    def each(of: Any) -> list[Any]:
        return [value for part in parts for value in of(part)]

    confidence = np.full(count, np.nan, dtype=np.float32)
    offset = 0
    for part in parts:
        if part.confidence is not None:
            confidence[offset : offset + part.rows] = part.confidence
        offset += part.rows
    columns: dict[str, Any] = {
        "request_id": each(lambda p: repeated(p.request_id, p)),
        "served_at": each(lambda p: repeated(int(p.served_at * 1000), p)),
        "row": each(lambda p: range(p.first_row, p.first_row + p.rows)),
        "record_id": each(lambda p: p.keys.ids if p.keys else repeated(None, p)),
        "case_number": each(lambda p: p.keys.case_numbers if p.keys else repeated(None, p)),
        "model": each(lambda p: repeated(p.kind, p)),
        "model_name": each(lambda p: repeated(p.model_name, p)),
        "role": each(lambda p: repeated(p.role, p)),
        "model_version": each(lambda p: repeated(p.model_version, p)),
        "transformation_version": each(lambda p: repeated(p.transformation_version, p)),
        "fbi_code": each(lambda p: p.codes),
        "confidence": pa.array(confidence, from_pandas=True),  # NaN: the model gave none
    }
    return pa.Table.from_pydict(columns, schema=schema())
