"""The prediction log's rows: one per answered record and model, as the gateway served it.

A `Served` is one model's answers for the records of one request (or one shadow call), as the
gateway's core hands them over. The log holds an answer of many records as a `Held` (its
per-row values moved into Arrow arrays at once, so that no Python object per row outlives it),
and answers of a few records in a `Few` (a tuple per record, made Arrow every few thousand).
The writer turns them into one Arrow table per served day and model, off the request path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from crimes.feedback.keys import RecordKeys
from crimes.protocol import inference
from crimes.protocol.inference import IndexedLabels

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


@dataclass(slots=True)  # made for every answer: slots make it three times cheaper than frozen
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
    indexed: IndexedLabels | None = None  # `codes` as the service sent them, if as indices

    @property
    def rows(self) -> int:
        return len(self.codes)


def day_of(served_at: float) -> str:
    """The UTC day of a time, as the log's folders name it."""
    return dt.datetime.fromtimestamp(served_at, dt.UTC).strftime("%Y-%m-%d")


# The columns whose value is a part's own (one per request and model): written dictionary-
# encoded, as built, so that neither the writer nor Parquet hashes them row by row.
PER_PART: Final = frozenset(
    {"request_id", "model", "model_name", "role", "model_version", "transformation_version"}
)
PER_ROW_TEXT: Final = ("record_id", "case_number")
# The FBI codes (a few dozen values) are dictionary-encoded too: made from the indices the
# model services send (`IndexedLabels`), never from a string per row.
DICTIONARY: Final = PER_PART | {"fbi_code"}


@dataclass(frozen=True)
class Held:
    """A `Served` as the log holds it until written. Holding the answers' own lists of strings
    (a Python object per row, alive for a flush interval) made the gateway's request path about
    10 % slower as a whole (its memory is then never reused while still warm: fresh arenas,
    page faults, longer collections); three Arrow arrays cost about 30 µs per 1,000 rows."""

    answer: Served  # its constants; `codes` and `keys` emptied
    # The codes as the service sent them (indices into its classes: one numpy array, made
    # Arrow by the writer), or as an Arrow array (an older service's text labels).
    codes: IndexedLabels | pa.Array
    record_ids: pa.Array | None
    case_numbers: pa.Array | None

    @property
    def rows(self) -> int:
        codes = self.codes
        return len(codes.indices if isinstance(codes, IndexedLabels) else codes)


class Holder:
    """Makes `Held` parts on the event loop. A request's keys are shared by every model's
    answers to it: converted once (the last keys seen are remembered). The codes stay the
    indices the service sent: made a dictionary array by the writer, not here (an Arrow call
    on the event loop lets the writer's thread take the GIL: under batch load, py-spy put
    76 µs per batch on the 3 µs it costs alone)."""

    def __init__(self) -> None:
        import pyarrow as pa

        self._pa = pa
        self._keys: tuple[RecordKeys, pa.Array, pa.Array] | None = None
        pa.array(["warm"], pa.string())  # the first conversion costs milliseconds: not a request's

    def hold(self, answer: Served) -> Held:
        pa = self._pa
        codes = self._codes(answer)
        ids = case_numbers = None
        if answer.keys is not None:
            if self._keys is None or self._keys[0] is not answer.keys:
                keys = answer.keys
                self._keys = (
                    keys,
                    pa.array(keys.ids, pa.string()),
                    pa.array(keys.case_numbers, pa.string()),
                )
            _, ids, case_numbers = self._keys
        held = dataclasses.replace(answer, codes=(), keys=None, indexed=None)
        return Held(held, codes, ids, case_numbers)

    def _codes(self, answer: Served) -> IndexedLabels | pa.Array:
        if answer.indexed is None:  # labels sent as text (an older model service)
            return self._pa.array(answer.codes, self._pa.string()).dictionary_encode()
        return answer.indexed


def _arrow_codes(parts: Sequence[Held]) -> pa.Array:
    """The parts' codes as one dictionary array. Parts of one version (the usual flush) share
    their classes: their indices are joined by numpy and made Arrow once."""
    import pyarrow as pa

    codes = [part.codes for part in parts]
    indexed = [c for c in codes if isinstance(c, IndexedLabels)]
    classes = {c.classes_json for c in indexed}
    if len(indexed) == len(codes) and len(classes) == 1:
        return _dictionary(np.concatenate([c.indices for c in indexed]), classes.pop())
    # Dictionary arrays over different classes (versions) are concatenated by Arrow, which
    # joins their dictionaries.
    return pa.concat_arrays(
        [
            _dictionary(c.indices, c.classes_json) if isinstance(c, IndexedLabels) else c
            for c in codes
        ]
    )


def _dictionary(indices: npt.NDArray[np.int32], classes_json: str) -> pa.Array:
    """Label indices as a dictionary array over the classes they index."""
    import pyarrow as pa

    # In bounds: the protocol checked every index against its classes when decoding.
    return pa.DictionaryArray.from_arrays(
        pa.array(indices.astype(np.int32, copy=False)), _arrow_classes(classes_json), safe=False
    )


@functools.lru_cache(maxsize=64)  # versions come and go: a bounded cache
def _arrow_classes(classes_json: str) -> pa.Array:
    """The classes an answer names (as the protocol decodes them), as a dictionary."""
    import pyarrow as pa

    return pa.array(inference.class_labels(classes_json).tolist(), pa.string())


# An answer of at most this many records (a single request's, mostly) is kept by `Few`, a
# tuple per record: Arrow arrays of one value cost more to make and to join than the answer
# (measured here: 10.5 µs a record to hold and 16 µs to write, against 2.2 µs and under 1 µs).
FEW_ROWS: Final = 16


class Few:
    """Answers of few records each, of one served day and model, kept as a tuple of the log's
    columns per record (the codes and ids are the answers' own strings): an append is one
    tuple. Every CHUNK_ROWS records the tuples become an Arrow table (about 0.9 µs a record,
    on the event loop): as a tuple a record costs a few hundred bytes, in Arrow about 90 (its
    request id and keys are its own), so the log's bound in rows stays one in bytes."""

    CHUNK_ROWS: Final = 2048

    def __init__(self) -> None:
        self._chunks: list[pa.Table] = []
        self._records: list[tuple[Any, ...]] = []

    def add(self, answer: Served) -> None:
        keys, confidence = answer.keys, answer.confidence
        for i, code in enumerate(answer.codes):
            self.add_row(
                (
                    answer.request_id,
                    answer.served_at,
                    answer.first_row + i,
                    None if keys is None else keys.ids[i],
                    None if keys is None else keys.case_numbers[i],
                    answer.kind,
                    answer.model_name,
                    answer.role,
                    answer.model_version,
                    answer.transformation_version,
                    code,
                    math.nan if confidence is None else float(confidence[i]),
                )
            )

    def add_row(self, row: tuple[Any, ...]) -> None:
        """One record's row, its values in the order of COLUMNS."""
        records = self._records
        records.append(row)
        if len(records) >= self.CHUNK_ROWS:
            self._chunks.append(self._listed())
            self._records = []

    def table(self) -> pa.Table:
        import pyarrow as pa

        tables = [*self._chunks, self._listed()] if self._records else self._chunks
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def _listed(self) -> pa.Table:
        """The records held as tuples, as a table."""
        import pyarrow as pa

        values = dict(zip(COLUMNS, map(list, zip(*self._records, strict=True)), strict=True))
        text = pa.string()
        millis = (np.array(values["served_at"], np.float64) * 1000).astype(np.int64)
        columns = {
            "served_at": _timestamps(millis),
            "row": pa.array(values["row"], pa.int32()),
            "confidence": _confidence(np.array(values["confidence"], np.float32)),
            **{name: _encoded(values[name]) for name in DICTIONARY},
            **{name: pa.array(values[name], text) for name in PER_ROW_TEXT},
        }
        return pa.Table.from_arrays(
            [columns[name] for name in COLUMNS], schema=schema(written=True)
        )


def _encoded(values: Sequence[str]) -> pa.Array:
    """Text as a dictionary array. A column of one value (a chunk's model, version, role: the
    usual case) is made as zeros over it, with no hash per row (about 90 µs less per column
    of a 2,048-record chunk, on the event loop)."""
    import pyarrow as pa

    if values and values.count(values[0]) == len(values):
        return pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(len(values), np.int32)), pa.array(values[:1], pa.string())
        )
    return pa.array(values, pa.string()).dictionary_encode()


# The columns a row may leave empty (a record sent without its keys, a model without
# probabilities); the writer stores every other one as never null.
NULLABLE: Final = frozenset({"record_id", "case_number", "confidence"})


def schema(*, written: bool = False) -> pa.Schema:
    """The log's columns as readers get them (plain strings, any column nullable), or as the
    writer stores them: dictionary-encoded, and non-null where no row lacks the value (Parquet
    then writes no definition levels for them: 40 % less time writing a file, measured here)."""
    import pyarrow as pa

    text = pa.string()
    encoded = pa.dictionary(pa.int32(), text) if written else text
    columns = [
        ("request_id", encoded),
        ("served_at", pa.timestamp("ms", tz="UTC")),
        ("row", pa.int32()),
        ("record_id", text),
        ("case_number", text),
        ("model", encoded),
        ("model_name", encoded),
        ("role", encoded),
        ("model_version", encoded),
        ("transformation_version", encoded),
        ("fbi_code", encoded),
        ("confidence", pa.float32()),
    ]
    return pa.schema(
        [pa.field(name, kind, nullable=not written or name in NULLABLE) for name, kind in columns]
    )


def table(parts: Sequence[Held]) -> pa.Table:
    """Many answers as one table, a row per record, in the order given. Built column by column:
    a part's constant values (its request, model, versions, time) are repeated by numpy and
    Arrow, its per-row values concatenated by Arrow; nothing runs row by row in Python. The
    log runs in the gateway's process, so its cost is the answers' cost."""
    import pyarrow as pa

    answers = [part.answer for part in parts]
    counts = np.fromiter((part.rows for part in parts), dtype=np.int64, count=len(parts))
    total = int(counts.sum())
    text = pa.string()

    def constant(values: list[str]) -> pa.Array:
        # Each distinct value once in the dictionary: given repeated values, Parquet writes
        # the column out in full (measured three times the cost), not as its dictionary.
        distinct, index = np.unique(np.array(values, dtype=object), return_inverse=True)
        if len(distinct) == 1:  # one model, version, ... in a flush: no repeat to make
            indices = pa.array(np.zeros(total, np.int32))
        else:
            indices = pa.array(np.repeat(index.astype(np.int32), counts))
        return pa.DictionaryArray.from_arrays(
            indices, pa.array(distinct.tolist(), text), safe=False
        )

    def joined(values: list[pa.Array | None]) -> pa.Array:
        if all(value is None for value in values):  # no part sent keys (or no part)
            return pa.nulls(total, text)
        filled = (
            pa.nulls(part.rows, text) if value is None else value
            for part, value in zip(parts, values, strict=True)
        )
        return pa.concat_arrays(list(filled))

    def codes() -> pa.Array:
        if not parts:
            return pa.array([], text).dictionary_encode()
        return _arrow_codes(parts)

    def rows() -> pa.Array:
        # Each record's position in its request: a running count, less its part's start,
        # plus the part's first position.
        starts = np.cumsum(counts) - counts
        firsts = np.fromiter((a.first_row for a in answers), np.int64, len(parts))
        return pa.array((np.arange(total) - np.repeat(starts - firsts, counts)).astype(np.int32))

    millis = np.fromiter((int(a.served_at * 1000) for a in answers), np.int64, len(parts))
    confidence = [
        np.full(part.rows, np.nan, np.float32) if a.confidence is None else a.confidence
        for part, a in zip(parts, answers, strict=True)
    ]
    columns = [
        constant([a.request_id for a in answers]),
        _timestamps(np.repeat(millis, counts)),
        rows(),
        joined([part.record_ids for part in parts]),
        joined([part.case_numbers for part in parts]),
        constant([a.kind for a in answers]),
        constant([a.model_name for a in answers]),
        constant([a.role for a in answers]),
        constant([a.model_version for a in answers]),
        constant([a.transformation_version for a in answers]),
        codes(),
        _confidence(
            np.concatenate(confidence).astype(np.float32, copy=False)
            if parts
            else np.array([], np.float32)
        ),
    ]
    return pa.Table.from_arrays(columns, schema=schema(written=True))


def day_table(parts: Sequence[Held], few: Few | None) -> pa.Table:
    """One served day and model's answers as one table: the held parts', then the few's."""
    import pyarrow as pa

    tables = ([table(parts)] if parts else []) + ([few.table()] if few is not None else [])
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def _timestamps(millis: npt.NDArray[np.int64]) -> pa.Array:
    """Milliseconds since the epoch as the log's `served_at` column."""
    import pyarrow as pa

    return pa.array(millis, pa.timestamp("ms", tz="UTC"))


def _confidence(values: npt.NDArray[np.float32]) -> pa.Array:
    """Top probabilities as the log's `confidence` column: NaN (the model gave none) as null."""
    import pyarrow as pa

    return pa.array(values, from_pandas=True)
