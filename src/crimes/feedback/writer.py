"""The prediction log's writer: never on the answer's path.

`append` runs on the gateway's event loop: it keeps a reference to the answers under a lock,
and never waits for I/O or raises. A thread of its own writes what has gathered every
`flush_seconds` (or sooner, once `flush_rows` wait): one Parquet file per served day and
model, to the data lake; when the lake refuses, to a bounded spill folder, uploaded oldest
first once the lake takes files again (also at the next start). Rows are dropped only when the
memory bound is reached, or the spill folder is full while the lake is down: counted in
`crimes_prediction_log_rows_total{outcome="dropped"}` and logged, never silently. A graceful
stop writes everything it holds.

What a SIGKILL loses: the rows held in memory, at most `buffer_rows` (rows leave the bound only
once their file is written, to the lake or the spill folder).

The writer's thread runs below the answers (`writer_nice`): it takes the CPU they leave. A
writer starved that way must not make the log drop rows, so a second thread at the answers'
own priority waits beside it and writes what waits once half the bound is held (`_relieve`):
the log then costs the answers CPU only when it would otherwise lose rows. One flush runs at a
time, so files are written in the order their rows came, and a SIGKILL loses the latest.
"""

from __future__ import annotations

import io
import itertools
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from crimes.feedback import served
from crimes.feedback.served import Few, Held, Holder, Served
from crimes.feedback.settings import PredictionLogSettings
from crimes.lake import layout
from crimes.lake.storage import Lake
from crimes.ops.logs import get_logger

log = get_logger(__name__)


class Sink(Protocol):
    """Where the log's files go (the data lake)."""

    def write(self, key: str, data: bytes) -> None: ...


class LakeSink:
    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    def write(self, key: str, data: bytes) -> None:
        self.lake.write_bytes(key, data)


def _lower_priority(nice: int) -> None:
    """The calling thread's CPU priority lowered to `nice` (never raised: that needs a
    privilege). Linux gives each thread its own nice value; elsewhere it stays as it is."""
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        if nice > current:
            os.setpriority(os.PRIO_PROCESS, thread, nice)
    except (AttributeError, OSError) as error:
        log.warning("prediction_log.priority_unchanged", nice=nice, error=repr(error))


class LogMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.rows = Counter(
            "crimes_prediction_log_rows_total",
            "Prediction log rows by what became of them: written to the lake, spilled to the "
            "local folder, uploaded from it, or dropped.",
            ["outcome"],
            registry=registry,
        )
        self.write_failures = Counter(
            "crimes_prediction_log_write_failures_total",
            "Prediction log files the data lake refused (then spilled).",
            registry=registry,
        )
        self.reliefs = Counter(
            "crimes_prediction_log_reliefs_total",
            "Flushes the relief thread made because the writer, below the answers' priority, "
            "let half the memory bound fill (a sign the gateway has no idle CPU for it).",
            registry=registry,
        )
        self.pending = Gauge(
            "crimes_prediction_log_pending_rows",
            "Prediction log rows held in memory, not yet written.",
            registry=registry,
        )
        self.spill_bytes = Gauge(
            "crimes_prediction_log_spill_bytes",
            "Bytes of prediction log files waiting in the spill folder.",
            registry=registry,
        )


SECONDS_A_DAY: Final = 86_400

# One model's answer to one record, as `PredictionLog.append_record` takes it: the model's
# kind, registered name, version and transformation version, the code, its confidence (NaN:
# none).
Answered = tuple[str, str, str, str, str, float]


def parquet(table: object) -> bytes:
    """The cheapest Parquet to write that stays small: the per-part columns and the FBI codes
    come dictionary-encoded (written as they are, nothing hashed); LZ4 (measured 30 % less work
    than zstd here, files about 15 % larger: the gateway's CPU is the dearer); no column
    statistics (the files are found by their date and model folders)."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(
        table,
        buffer,
        compression="lz4",
        write_statistics=False,
        use_dictionary=sorted(served.DICTIONARY),
    )
    return buffer.getvalue()


class PredictionLog:
    def __init__(
        self,
        sink: Sink,
        settings: PredictionLogSettings,
        registry: CollectorRegistry | None = None,
        instance: str = "",
    ) -> None:
        self.sink = sink
        self.settings = settings
        self.metrics = LogMetrics(registry)
        # Part names: unique per process, ordered in time within it.
        self._instance = instance or uuid.uuid4().hex[:8]
        self._sequence = itertools.count()
        self._parts: list[Held] = []
        self._few: dict[tuple[str, str], Few] = {}  # answers of few records, by day and model
        self._today = (0.0, "")
        self._holder: Holder | None = None  # made at start: it imports pyarrow
        self._waiting = 0  # rows in `_parts`
        self._held = 0  # rows appended and not yet written (lake or spill)
        self._dropped_unreported = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._relief = threading.Event()
        self._flushing = threading.Lock()  # one flush at a time: files in the rows' order
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # --- the event loop's side ------------------------------------------------------------

    def append(self, answer: Served) -> None:
        """Keep one model's answers for the log; drop (and count) them when the memory bound
        is reached. Never blocks on I/O, never raises."""
        rows = answer.rows
        if rows <= served.FEW_ROWS:
            part: Held | None = None
            group = (self._day(answer.served_at), answer.kind)
        else:
            if self._holder is None:
                self._holder = Holder()
            part = self._holder.hold(answer)
        with self._lock:
            if self._held + rows > self.settings.buffer_rows:
                self._drop(rows)
                return
            if part is not None:
                self._parts.append(part)
            else:
                self._few_of(group).add(answer)
            self._waiting += rows
            self._held += rows
            due = self._waiting >= self.settings.flush_rows
        if due:
            self._wake_writers()

    def append_record(
        self,
        request_id: str,
        served_at: float,
        key: tuple[str | None, str | None],
        answers: Sequence[Answered],
    ) -> None:
        """`append` for the champions' answers to one record (a single-record request, the
        commonest): a row per answer straight from its values, under one lock, no `Served`
        made (about half the work per request). `key`: the record's id and case number."""
        if not answers:
            return
        day = self._day(served_at)
        record_id, case_number = key
        with self._lock:
            for kind, model_name, version, transformation, code, confidence in answers:
                if self._held >= self.settings.buffer_rows:
                    self._drop(1)
                    continue
                self._few_of((day, kind)).add_row(
                    (
                        request_id,
                        served_at,
                        0,
                        record_id,
                        case_number,
                        kind,
                        model_name,
                        served.CHAMPION,
                        version,
                        transformation,
                        code,
                        confidence,
                    )
                )
                self._waiting += 1
                self._held += 1
            due = self._waiting >= self.settings.flush_rows
        if due:
            self._wake_writers()

    def _wake_writers(self) -> None:
        """The writer woken (rows wait); its relief too once half the bound is held: the
        writer, below the answers' priority, may be starved of CPU."""
        self._wake.set()
        if self._held * 2 >= self.settings.buffer_rows:
            self._relief.set()

    def _few_of(self, group: tuple[str, str]) -> Few:
        """The few-record answers held for a served day and model (under the lock)."""
        few = self._few.get(group)
        if few is None:
            few = self._few[group] = Few()
        return few

    def _day(self, served_at: float) -> str:
        """The UTC day of a time, remembered for the rest of that day (no formatting per
        answer). Both threads call it: each call's answer is its own time's day, and a race
        only makes one format a day again."""
        start, day = self._today
        if not start <= served_at < start + SECONDS_A_DAY:
            start = served_at - served_at % SECONDS_A_DAY
            day = served.day_of(start)
            self._today = (start, day)
        return day

    def _drop(self, rows: int) -> None:
        self._dropped_unreported += rows
        self.metrics.rows.labels("dropped").inc(rows)

    # --- the writer's thread --------------------------------------------------------------

    def start(self) -> None:
        self._holder = Holder()
        self.settings.spill_dir.mkdir(parents=True, exist_ok=True)
        self._update_spill_gauge()
        self._threads = [threading.Thread(target=self._run, name="prediction-log", daemon=True)]
        if self.settings.writer_nice > 0:
            self._threads.append(
                threading.Thread(target=self._relieve, name="prediction-log-relief", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def stop(self) -> bool:
        """Write everything held; False when that did not finish within `stop_seconds`."""
        if not self._threads:
            return True
        self._stopping = True
        self._wake.set()
        self._relief.set()
        deadline = time.monotonic() + self.settings.stop_seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        finished = not any(thread.is_alive() for thread in self._threads)
        if not finished:
            log.error("prediction_log.stop_unfinished", rows_held=self._held)
        else:
            log.info("prediction_log.stopped", rows_held=self._held)
        return finished

    def _run(self) -> None:
        _lower_priority(self.settings.writer_nice)
        while True:
            self._wake.wait(self.settings.flush_seconds)
            self._wake.clear()
            stopping = self._stopping
            try:
                if self.flush() and not stopping:
                    self.upload_spilled()
            except Exception as error:  # the writer must never die
                log.error("prediction_log.writer_failed", error=repr(error))
            self._report_drops()
            if stopping:
                return

    def _relieve(self) -> None:
        """At the answers' priority: write what waits whenever half the bound is held (the
        writer's own thread, below them, may not be getting the CPU: between its flushes, or
        through a slow upload of the spill; a flush of its own already begun is let finish
        first). The writer alone uploads the spill and makes the last flush at a stop."""
        while True:
            self._relief.wait()
            self._relief.clear()
            if self._stopping:
                return
            self.metrics.reliefs.inc()
            try:
                self.flush()
            except Exception as error:  # the relief must never die either
                log.error("prediction_log.relief_failed", error=repr(error))

    def flush(self) -> bool:
        """Write what waits, a file per served day and model; False if the lake refused one."""
        with self._flushing:
            return self._flush()

    def _flush(self) -> bool:
        with self._lock:
            parts, self._parts, self._waiting = self._parts, [], 0
            few, self._few = self._few, {}
        lake_took = True
        groups: dict[tuple[str, str], list[Held]] = defaultdict(list)
        for part in parts:
            groups[(self._day(part.answer.served_at), part.answer.kind)].append(part)
        for day, kind in sorted(groups.keys() | few.keys()):
            table = served.day_table(groups.get((day, kind), []), few.get((day, kind)))
            rows = table.num_rows
            key = layout.prediction_log_key(day, kind, self._part_name())
            data = parquet(table)
            if lake_took and self._write(key, data):
                self.metrics.rows.labels("written").inc(rows)
            else:
                lake_took = False
                self._spill(key, data, rows)
            with self._lock:
                self._held -= rows
        self.metrics.pending.set(self._held)
        return lake_took

    def _part_name(self) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        return f"part-{stamp}-{self._instance}-{next(self._sequence):06d}"

    def _write(self, key: str, data: bytes) -> bool:
        try:
            self.sink.write(key, data)
        except Exception as error:  # any failure of the lake: the file goes to the spill
            self.metrics.write_failures.inc()
            log.warning("prediction_log.lake_write_failed", key=key, error=repr(error))
            return False
        return True

    def _spill(self, key: str, data: bytes, rows: int) -> None:
        folder = self.settings.spill_dir
        if self._spilled_bytes() + len(data) > self.settings.spill_max_bytes:
            with self._lock:
                self._drop(rows)
            return
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / key.replace("/", "%")
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, target)  # never a partial file under a real name
        self.metrics.rows.labels("spilled").inc(rows)
        self._update_spill_gauge()

    def _spilled(self) -> list[Path]:
        folder = self.settings.spill_dir
        if not folder.is_dir():
            return []
        return sorted(
            (p for p in folder.glob("*.parquet") if not p.name.startswith(".")),
            key=lambda p: p.name.rsplit("%", 1)[-1],  # the part name: oldest first
        )

    def _spilled_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._spilled())

    def _update_spill_gauge(self) -> None:
        self.metrics.spill_bytes.set(self._spilled_bytes())

    def upload_spilled(self) -> int:
        """Move spilled files to the lake, oldest first, until one fails; how many moved.
        A file uploaded twice (a crash between upload and delete) lands on the same key."""
        moved = 0
        for path in self._spilled():
            key = path.name.replace("%", "/")
            if not self._write(key, path.read_bytes()):
                break
            rows = self._rows_of(path)
            path.unlink()
            self.metrics.rows.labels("uploaded").inc(rows)
            moved += 1
        if moved:
            log.info("prediction_log.spill_uploaded", files=moved)
            self._update_spill_gauge()
        return moved

    @staticmethod
    def _rows_of(path: Path) -> int:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)

    def _report_drops(self) -> None:
        with self._lock:
            dropped, self._dropped_unreported = self._dropped_unreported, 0
        if dropped:
            log.warning("prediction_log.rows_dropped", rows=dropped)
