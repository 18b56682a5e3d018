"""The ETL stages' summaries cross the Airflow task boundary as JSON and come back the same."""

from __future__ import annotations

import json

from crimes.etl.pipeline import Extracted, FinalSet, Preprocessed

FILE = {
    "crimes.parquet": {
        "key": "chicago/crimes/2024/raw/snap-1/crimes.parquet",
        "sha256": "0",
        "bytes": 1,
    }
}


def test_each_summary_reads_back_from_its_json() -> None:
    summaries = [
        Extracted(2024, "snap-1", "https://portal", "json", 3, 120, FILE, 1.5),
        Preprocessed(120, 118, {"bad_date": 2}, FILE, 0.4),
        FinalSet("ds-1", "tf-1", 80, 38, ["06", "07"], ["01A"], 299, {"final": FILE}, 2.0),
    ]
    for summary in summaries:
        again = type(summary).from_dict(json.loads(json.dumps(summary.as_dict())))
        assert again == summary
    assert not Extracted(2024, "s", "https://portal", "json", 1, 1, FILE, 0).synthetic
    assert Extracted(2024, "s", "synthetic://", "synthetic", 1, 1, FILE, 0).synthetic
