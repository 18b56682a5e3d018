"""The notebook a data scientist opens first runs, top to bottom, on an evaluation in a lake
(nbclient, a real kernel), and shows each version's figures, the estimate's error and the worst
codes."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from crimes.feedback import results
from crimes.feedback.evaluation import evaluate
from crimes.lake.settings import LakeSettings
from crimes.lake.storage import Lake
from tests.conftest import PROJECT_ROOT
from tests.feedback.test_evaluation import LABELS, log_rows

NOTEBOOK = PROJECT_ROOT / "notebooks" / "served_accuracy.ipynb"


def outputs(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(
        str(output.get("data", {}).get("text/plain", output.get("text", "")))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


def test_the_notebook_runs_on_the_latest_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(LakeSettings(root=f"file://{tmp_path}/lake"))
    answers = log_rows([
        ("a", 0, "1", None, "3", "06", 0.9),
        ("a", 1, "2", None, "3", "06", 0.9),
        ("b", 0, "3", None, "3", "14", 0.6),
    ])  # fmt: skip
    later = answers.assign(
        served_at=pd.Timestamp("2024-09-03T08:00:00Z"), model_version="4", request_id="c"
    )
    results.write_tables(lake, evaluate(pd.concat([answers, later]), LABELS))
    monkeypatch.setenv("CRIMES_LAKE_ROOT", lake.root)
    notebook = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={
        "metadata": {"path": str(tmp_path)}
    }).execute(env=dict(os.environ))  # fmt: skip
    shown = outputs(notebook)
    assert "dtc v3" in shown
    assert "dtc v4" in shown
    assert "estimate_error" in shown
    # The worst code: 07, answered 06 by both versions.
    assert "07" in shown
