"""The latest evaluation's figures as the gateway exports them: read from the lake table the
pointer names (verified), the newest labelled day per version, nothing when none exists yet,
and a gauge that says when the lake cannot be read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from crimes.feedback import results
from crimes.feedback.evaluation import evaluate
from crimes.feedback.exporter import AccuracyBoard, AccuracyCollector
from crimes.lake.settings import LakeSettings
from crimes.lake.storage import Lake
from tests.feedback.test_evaluation import LABELS, log_rows


def exported(board: AccuracyBoard) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(AccuracyCollector(board))
    found = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("crimes_") and "{" in line:
            name, rest = line.split("{", 1)
            labels, value = rest.rsplit("} ", 1)
            found[(name, labels)] = float(value)
        elif line.startswith("crimes_"):
            name, value = line.split(" ")
            found[(name, "")] = float(value)
    return found


def test_the_gateway_exports_the_latest_evaluation(tmp_path: Path) -> None:
    lake = Lake(LakeSettings(root=f"file://{tmp_path}"))
    board = AccuracyBoard(lake)
    board.refresh()
    assert exported(board) == {("crimes_evaluation_readable", ""): 1.0}
    answers = log_rows([("a", 0, "1", None, "3", "06", 0.9), ("a", 1, "2", None, "3", "06", 0.9)])
    later = answers.assign(served_at=pd.Timestamp("2024-09-03T10:00:00Z"), row=[2, 3])
    later["fbi_code"] = ["06", "07"]
    results.write_tables(
        lake, evaluate(pd.concat([answers, later]), LABELS), stamp="20240904T000000Z"
    )
    board.refresh()
    figures = exported(board)
    version = 'model="dtc",role="champion",version="3"'
    assert figures[("crimes_served_accuracy", version)] == 0.75
    assert figures[("crimes_served_labelled_records", version)] == 4
    assert figures[("crimes_served_accuracy_estimate", version)] == pytest.approx(0.9)
    # The newest day with labels: 2024-09-03, both right.
    assert figures[("crimes_served_day_accuracy", version)] == 1.0
    assert figures[("crimes_served_day_labelled_records", version)] == 2


def test_an_unreadable_table_is_said_not_hidden(tmp_path: Path) -> None:
    lake = Lake(LakeSettings(root=f"file://{tmp_path}"))
    answers = log_rows([("a", 0, "1", None, "3", "06", 0.9)])
    manifest = results.write_tables(lake, evaluate(answers, LABELS), stamp="20240904T000000Z")
    lake.write_bytes(manifest["files"]["tables"]["days.parquet"]["key"], b"altered")
    board = AccuracyBoard(lake)
    board.refresh()
    assert exported(board) == {("crimes_evaluation_readable", ""): 0.0}
