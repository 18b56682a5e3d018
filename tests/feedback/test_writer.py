"""The prediction log's writer against a sink of our own (a folder that can refuse): what it
writes, where it spills, what it drops and counts, and that a graceful stop loses nothing."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from crimes.feedback import served
from crimes.feedback.keys import RecordKeys
from crimes.feedback.served import CHAMPION, COLUMNS, Served
from crimes.feedback.settings import PredictionLogSettings
from crimes.feedback.writer import Answered, PredictionLog
from crimes.protocol.inference import IndexedLabels

DAY = 1_733_400_000.0  # 2024-12-05 (UTC)


class Folder:
    """A sink that keeps files in memory, refuses while `down`, and can hang."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.down = False
        self.hang = threading.Event()
        self.hang.set()

    def write(self, key: str, data: bytes) -> None:
        self.hang.wait()
        if self.down:
            raise ConnectionError("the lake is down")
        self.files[key] = data

    def rows(self) -> list[dict[str, Any]]:
        tables = [pq.read_table(io.BytesIO(data)) for data in list(self.files.values())]
        return [row for table in tables for row in table.to_pylist()]


def answer(request: str, codes: list[str], kind: str = "dtc", when: float = DAY) -> Served:
    return Served(
        request_id=request,
        served_at=when,
        kind=kind,
        model_name=f"chicago-crimes-{kind}",
        role=CHAMPION,
        model_version="3",
        transformation_version="tf-1",
        codes=codes,
        confidence=np.linspace(0.5, 0.9, len(codes), dtype=np.float32),
        keys=RecordKeys([str(100 + i) for i in range(len(codes))], [None] * len(codes)),
    )


def settings(tmp_path: Path, **values: Any) -> PredictionLogSettings:
    given: dict[str, Any] = {
        "flush_seconds": 3600,
        "flush_rows": 1000,
        "buffer_rows": 2000,
        "spill_dir": tmp_path / "spill",
    }
    return PredictionLogSettings(**{**given, **values})


def counted(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value("crimes_prediction_log_rows_total", {"outcome": outcome})
    return value or 0.0


def test_a_flush_writes_a_file_per_day_and_model_with_every_row(tmp_path: Path) -> None:
    sink = Folder()
    log = PredictionLog(sink, settings(tmp_path))
    log.append(answer("r1", ["06", "07"]))
    log.append(answer("r1", ["06", "08B"], kind="lda"))
    log.append(answer("r2", ["14"], when=DAY + 86_400))
    assert log.flush()
    assert sorted(key.rsplit("/", 1)[0] for key in sink.files) == [
        "chicago/crimes/predictions/date=2024-12-05/model=dtc",
        "chicago/crimes/predictions/date=2024-12-05/model=lda",
        "chicago/crimes/predictions/date=2024-12-06/model=dtc",
    ]
    rows = sink.rows()
    assert len(rows) == 5
    assert set(rows[0]) == set(COLUMNS)
    dtc = sorted(
        (r["request_id"], r["row"], r["record_id"], r["fbi_code"])
        for r in rows
        if r["model"] == "dtc"
    )
    assert dtc == [("r1", 0, "100", "06"), ("r1", 1, "101", "07"), ("r2", 0, "100", "14")]
    assert {round(float(r["confidence"]), 2) for r in rows if r["request_id"] == "r1"} == {0.5, 0.9}


def one_by_one(whole: Served) -> list[Served]:
    """The same answers as single-record answers (as single requests give them)."""
    assert whole.keys is not None
    assert whole.confidence is not None
    return [
        dataclasses.replace(
            whole,
            codes=[code],
            confidence=whole.confidence[i : i + 1],
            keys=RecordKeys(whole.keys.ids[i : i + 1], whole.keys.case_numbers[i : i + 1]),
            first_row=i,
        )
        for i, code in enumerate(whole.codes)
    ]


def test_few_record_answers_are_written_as_many_record_answers_are(tmp_path: Path) -> None:
    """Answers of a few records are kept in lists, larger ones in Arrow arrays: the same
    rows either way, and both kinds in one file per day and model."""
    whole = answer("r1", ["06", "07", "08B", "14"] * 10)  # 40 records: held as arrays
    whole = dataclasses.replace(whole, keys=RecordKeys(whole.keys.ids, ["JH1"] * 40))  # type: ignore[union-attr]
    unsure = dataclasses.replace(answer("r3", ["26"]), confidence=None, keys=None)
    written: list[list[dict[str, Any]]] = []
    for parts in ([whole], one_by_one(whole)):
        sink = Folder()
        log = PredictionLog(sink, settings(tmp_path))
        for part in parts:
            log.append(part)
        assert log.flush()
        written.append(sorted(sink.rows(), key=lambda r: r["row"]))
    assert written[0] == written[1]
    assert [r["record_id"] for r in written[0]][:2] == ["100", "101"]
    assert {r["case_number"] for r in written[0]} == {"JH1"}

    sink = Folder()
    log = PredictionLog(sink, settings(tmp_path))
    for part in [whole, *one_by_one(answer("r2", ["03", "04B"])), unsure]:
        log.append(part)
    assert log.flush()
    assert len(sink.files) == 1
    rows = sink.rows()
    assert len(rows) == 43
    (alone,) = [r for r in rows if r["request_id"] == "r3"]
    assert alone["record_id"] is None
    assert alone["fbi_code"] == "26"
    assert alone["confidence"] is None  # the model gave none
    assert [r["row"] for r in rows if r["request_id"] == "r2"] == [0, 1]


def indexed_answer(request: str, labels: list[str], classes: list[str], **changes: Any) -> Served:
    """An answer whose labels came as indices into `classes` (as model services send them)."""
    indices = np.array([classes.index(c) for c in labels], dtype=np.int32)
    indexed = IndexedLabels(indices, json.dumps(classes))
    return dataclasses.replace(answer(request, labels), indexed=indexed, **changes)


def written_file(tmp_path: Path, sent: list[Served]) -> pa.Table:
    """The answers appended and flushed: the one file written, as stored."""
    sink = Folder()
    log = PredictionLog(sink, settings(tmp_path))
    for part in sent:
        log.append(part)
    assert log.flush()
    (data,) = sink.files.values()
    return pq.read_table(io.BytesIO(data))


def test_labels_sent_as_indices_are_written_as_the_labels(tmp_path: Path) -> None:
    """Answers whose labels came as indices into their version's classes (two versions with
    different classes in one file), beside labels sent as text (an older model service)."""
    codes = {"3": ["07", "06", "07", "14"] * 10, "4": ["26", "07", "01A", "07"] * 10}
    classes = {"3": ["06", "07", "14"], "4": ["01A", "07", "26"]}
    sent = [
        indexed_answer(f"r{version}", labels, classes[version], model_version=version)
        for version, labels in codes.items()
    ]
    sent.append(answer("r5", ["05", "07"] * 10))
    table = written_file(tmp_path, sent).cast(served.schema())  # as the evaluation reads
    rows = table.to_pylist()
    for part in sent:
        written = [r["fbi_code"] for r in rows if r["request_id"] == part.request_id]
        assert written == list(part.codes)


def test_answers_of_one_version_are_written_as_their_labels_in_order(tmp_path: Path) -> None:
    """Parts that share their classes (one version: the usual flush) are joined as indices
    before they become Arrow: each row keeps its own label, in the order answered."""
    classes = ["01A", "06", "07", "26"]
    sent = [
        indexed_answer(request, labels, classes)
        for request, labels in {"a": ["07", "26"] * 10, "b": ["01A", "06", "06"] * 7}.items()
    ]
    written = written_file(tmp_path, sent)
    # Stored without definition levels where a value never lacks (the cheaper file to write).
    assert {f.name for f in written.schema if f.nullable} == served.NULLABLE
    rows = written.cast(served.schema()).to_pylist()
    assert [(r["request_id"], r["fbi_code"]) for r in rows] == [
        (part.request_id, code) for part in sent for code in part.codes
    ]


def test_each_row_is_numbered_by_its_place_in_the_request(tmp_path: Path) -> None:
    """A part that starts further into its request (`first_row`) numbers its rows from there;
    parts of one flush number theirs apart."""
    classes = ["06", "07"]
    sent = [
        indexed_answer("a", ["06"] * 20, classes),
        dataclasses.replace(indexed_answer("b", ["07"] * 30, classes), first_row=40),
    ]
    rows = written_file(tmp_path, sent).to_pylist()
    assert [(r["request_id"], r["row"]) for r in rows] == [("a", i) for i in range(20)] + [
        ("b", i) for i in range(40, 70)
    ]


def test_the_lake_down_spills_and_the_spill_is_uploaded_once_it_is_back(tmp_path: Path) -> None:
    sink, registry = Folder(), CollectorRegistry()
    log = PredictionLog(sink, settings(tmp_path), registry)
    sink.down = True
    log.append(answer("r1", ["06"] * 10))
    assert not log.flush()
    assert sink.files == {}
    assert len(list((tmp_path / "spill").glob("*.parquet"))) == 1
    assert counted(registry, "spilled") == 10
    assert log.upload_spilled() == 0  # still down: kept
    sink.down = False
    assert log.upload_spilled() == 1
    assert len(sink.rows()) == 10
    assert counted(registry, "uploaded") == 10
    assert list((tmp_path / "spill").glob("*.parquet")) == []


def as_record(part: Served) -> tuple[str, float, tuple[str | None, str | None], list[Answered]]:
    """A one-record answer as `append_record` takes it."""
    keys, confidence = part.keys, part.confidence
    key = (None, None) if keys is None else (keys.ids[0], keys.case_numbers[0])
    value = math.nan if confidence is None else float(confidence[0])
    code = (part.kind, part.model_name, part.model_version, part.transformation_version)
    return part.request_id, part.served_at, key, [(*code, part.codes[0], value)]


def test_a_record_appended_alone_is_written_as_its_served_answer(tmp_path: Path) -> None:
    """`append_record` (the single-record path) writes the rows `append` writes for the same
    answers: with a key and a confidence, without either, two models in one call."""
    keyed = dataclasses.replace(answer("r1", ["06"]), keys=RecordKeys(["100"], ["JH1"]))
    bare = dataclasses.replace(answer("r2", ["26"]), confidence=None, keys=None)
    other = dataclasses.replace(answer("r1", ["07"], kind="lda"), keys=keyed.keys)
    written: list[list[dict[str, Any]]] = []
    for record_by_record in (False, True):
        sink = Folder()
        log = PredictionLog(sink, settings(tmp_path))
        if record_by_record:
            request, when, key, answers = as_record(keyed)
            log.append_record(request, when, key, answers + as_record(other)[3])
            log.append_record(*as_record(bare))
        else:
            for part in (keyed, other, bare):
                log.append(part)
        assert log.flush()
        written.append(sorted(sink.rows(), key=lambda r: (r["request_id"], r["model"])))
    assert written[0] == written[1]
    assert [(r["request_id"], r["fbi_code"], r["record_id"]) for r in written[1]] == [
        ("r1", "06", "100"),
        ("r1", "07", "100"),
        ("r2", "26", None),
    ]
    assert written[1][2]["confidence"] is None


def test_records_appended_alone_are_dropped_and_counted_at_the_bound(tmp_path: Path) -> None:
    sink, registry = Folder(), CollectorRegistry()
    log = PredictionLog(sink, settings(tmp_path, flush_rows=2, buffer_rows=3), registry)
    request, when, key, answers = as_record(answer("r1", ["06"]))
    log.append_record(request, when, key, answers * 2)
    log.append_record(request, when, key, answers * 2)  # the second answer passes the bound
    assert counted(registry, "dropped") == 1
    assert log.flush()
    assert len(sink.rows()) == 3


def test_rows_are_dropped_and_counted_only_when_memory_or_spill_is_full(tmp_path: Path) -> None:
    sink, registry = Folder(), CollectorRegistry()
    log = PredictionLog(sink, settings(tmp_path, spill_max_bytes=0), registry)
    for i in range(3):
        log.append(answer(f"r{i}", ["06"] * 900))  # the third passes the 2,000-row bound
    assert counted(registry, "dropped") == 900
    sink.down = True
    assert not log.flush()  # the spill takes nothing either
    assert counted(registry, "dropped") == 900 + 1800
    sink.down = False
    log.append(answer("r9", ["06"] * 1000))  # the bound is free again
    assert log.flush()
    assert len(sink.rows()) == 1000


def test_append_never_waits_for_a_hung_lake(tmp_path: Path) -> None:
    sink, registry = Folder(), CollectorRegistry()
    log = PredictionLog(sink, settings(tmp_path, flush_rows=100, buffer_rows=300), registry)
    sink.hang.clear()
    log.start()
    try:
        started = time.perf_counter()
        for i in range(50):
            log.append(answer(f"r{i}", ["06"] * 50))
        assert time.perf_counter() - started < 0.5
        # What the hung write holds counts against the bound: the rest is dropped.
        assert counted(registry, "dropped") == 50 * 50 - 300
    finally:
        sink.hang.set()
        assert log.stop()
    assert len(sink.rows()) == 300


def test_a_graceful_stop_writes_everything_it_holds(tmp_path: Path) -> None:
    sink = Folder()
    log = PredictionLog(sink, settings(tmp_path))
    log.start()
    for i in range(20):
        log.append(answer(f"r{i}", ["06", "07", "26"]))
    assert log.stop()
    assert len(sink.rows()) == 60


def test_a_stop_with_the_lake_down_keeps_everything_in_the_spill(tmp_path: Path) -> None:
    sink = Folder()
    sink.down = True
    log = PredictionLog(sink, settings(tmp_path))
    log.start()
    log.append(answer("r1", ["06"] * 7))
    assert log.stop()
    spilled = list((tmp_path / "spill").glob("*.parquet"))
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in spilled) == 7
    # The next process uploads them at its first flush.
    sink.down = False
    after = PredictionLog(sink, settings(tmp_path, flush_seconds=0.05))
    after.start()
    deadline = time.monotonic() + 5
    while not sink.files and time.monotonic() < deadline:
        time.sleep(0.02)
    assert after.stop()
    assert len(sink.rows()) == 7


class Niceness(Folder):
    """A sink that notes the CPU priority (nice) of the thread that writes to it."""

    def __init__(self) -> None:
        super().__init__()
        self.nice: list[int] = []

    def write(self, key: str, data: bytes) -> None:
        self.nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        super().write(key, data)


@pytest.mark.parametrize("nice", [19, 7])
def test_the_writer_runs_below_the_answers(tmp_path: Path, nice: int) -> None:
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert before < nice, "the suite must run at a higher priority than the one asked"
    sink = Niceness()
    log = PredictionLog(sink, settings(tmp_path, writer_nice=nice))
    log.start()
    log.append(answer("r1", ["06"] * 20))
    assert log.stop()
    assert sink.nice == [nice]
    # Only the writer's own thread: the appending thread (the event loop's) keeps its own.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


class Starving(Niceness):
    """A sink that holds every write from a thread below the suite's priority until `fed`:
    a writer the answers starve of CPU."""

    def __init__(self, answers_nice: int) -> None:
        super().__init__()
        self.answers_nice = answers_nice
        self.starving = threading.Event()
        self.fed = threading.Event()

    def write(self, key: str, data: bytes) -> None:
        if os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) > self.answers_nice:
            self.starving.set()
            self.fed.wait()
        super().write(key, data)


def until(condition: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


def spilled_before(tmp_path: Path, rows: int) -> None:
    """A spill folder left by an earlier process that stopped with the lake down."""
    sink = Folder()
    sink.down = True
    log = PredictionLog(sink, settings(tmp_path))
    log.start()
    log.append(answer("earlier", ["06"] * rows))
    assert log.stop()


def test_a_starved_writer_is_relieved_before_rows_are_dropped(tmp_path: Path) -> None:
    spilled_before(tmp_path, 7)
    answers_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    sink, registry = Starving(answers_nice), CollectorRegistry()
    tuned = settings(tmp_path, writer_nice=19, flush_seconds=0.05, flush_rows=100, buffer_rows=1000)
    log = PredictionLog(sink, tuned, registry)
    log.start()
    try:
        # The writer, below the answers' priority, starves while it uploads the spill.
        assert sink.starving.wait(5)
        for i in range(10):  # held: 500, half the bound
            log.append(answer(f"r{i}", ["06"] * 50))
        # The relief, at the answers' priority, writes what waits.
        assert until(lambda: len(sink.rows()) == 500)
        assert set(sink.nice) == {answers_nice}
        assert registry.get_sample_value("crimes_prediction_log_reliefs_total") == 1
        for i in range(18):  # 900 more: without the relief, 400 past the 1,000-row bound
            log.append(answer(f"s{i}", ["06"] * 50))
            # A pause for the relief, as the answers' own pauses give it: until nothing is due
            # for it (rows below a flush waiting, or under half the bound held).
            assert until(lambda: log._waiting < 100 or log._held < 500)
    finally:
        sink.fed.set()
        assert log.stop()
    assert counted(registry, "dropped") == 0
    assert len(sink.rows()) == 500 + 900 + 7
    assert set(sink.nice) == {answers_nice, 19}


def test_files_are_written_in_the_order_their_rows_came(tmp_path: Path) -> None:
    answers_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    sink = Starving(answers_nice)
    log = PredictionLog(sink, settings(tmp_path, writer_nice=19, flush_rows=100))
    log.start()
    try:
        log.append(answer("first", ["06"] * 100))
        assert sink.starving.wait(5), "the writer took the first rows, and starves"
        log.append(answer("second", ["06"] * 1000))  # past half the bound: the relief wakes
        # A later file never lands before an earlier one (a SIGKILL loses the latest rows).
        time.sleep(0.3)
        assert not sink.files
    finally:
        sink.fed.set()
        assert log.stop()
    written = [pq.read_table(io.BytesIO(data)) for data in sink.files.values()]
    assert [table["request_id"][0].as_py() for table in written] == ["first", "second"]


def test_the_buffer_must_hold_a_flush(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="BUFFER_ROWS"):
        settings(tmp_path, flush_rows=10, buffer_rows=5)
