"""A replay: the records of a real portal file (either export format) sent through a running
gateway in time order, in batches, each with its key, as live clients would send them; what
the gateway answered is kept, so that a test can check the evaluation against its own count.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pandas as pd

from crimes import contract
from crimes.etl.extract import read_file
from crimes.etl.preprocess import preprocess


class ReplayError(RuntimeError):
    """The gateway refused the replay (not a record's answer: its URL, key, or an outage)."""


@dataclass
class Answer:
    record_id: str
    true_code: str
    codes: dict[str, str | None]  # model -> the code the gateway answered
    versions: dict[str, str]  # model -> the version that answered


@dataclass
class ReplayReport:
    records: int = 0
    batches: int = 0
    failed_batches: int = 0
    answers: list[Answer] = field(default_factory=list)

    def served(self) -> dict[str, int]:
        """Records answered, per model and version (`dtc v3`)."""
        counts: Counter[str] = Counter()
        for answer in self.answers:
            for model, version in answer.versions.items():
                if answer.codes.get(model) is not None:
                    counts[f"{model} v{version}"] += 1
        return dict(sorted(counts.items()))

    def summary(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "batches": self.batches,
            "failed_batches": self.failed_batches,
            "served": self.served(),
        }


def records_of(source: str, since: dt.date | None, until: dt.date | None) -> pd.DataFrame:
    """The file's valid records with their keys, in the order they occurred, between `since`
    (included) and `until` (excluded)."""
    frame, _ = preprocess(read_file(source).frame, keys=True)
    when = frame["occurred_at"]
    if since is not None:
        frame = frame[when >= pd.Timestamp(since)]
    if until is not None:
        frame = frame[frame["occurred_at"] < pd.Timestamp(until)]
    return frame.sort_values(["occurred_at", "id"], kind="stable").reset_index(drop=True)


def _body(batch: pd.DataFrame) -> dict[str, Any]:
    features = [
        {name: _plain(value) for name, value in zip(contract.FEATURES, row, strict=True)}
        for row in batch[list(contract.FEATURES)].itertuples(index=False)
    ]
    keys = [
        {"id": str(record_id), "case_number": case if isinstance(case, str) and case else None}
        for record_id, case in zip(batch["id"], batch["case_number"], strict=True)
    ]
    return {"features": features, "keys": keys}


def _plain(value: Any) -> Any:
    """A frame's value as JSON has it (NaN and NA: null; numpy scalars: Python's)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def replay(
    frame: pd.DataFrame,
    gateway_url: str,
    api_key: str | None = None,
    batch_size: int = 500,
    timeout_seconds: float = 30.0,
) -> ReplayReport:
    """Send `frame`'s records (from `records_of`) through the gateway's batch route."""
    report = ReplayReport()
    headers = {"X-API-Key": api_key} if api_key else {}
    with httpx.Client(base_url=gateway_url, headers=headers, timeout=timeout_seconds) as client:
        for start in range(0, len(frame), batch_size):
            batch = frame.iloc[start : start + batch_size]
            try:
                answer = client.post("/predict/batch", json=_body(batch))
            except httpx.HTTPError as error:
                raise ReplayError(
                    f"the gateway at {gateway_url} is unreachable: {error}"
                ) from error
            if answer.status_code in (401, 403, 404, 413, 422):
                raise ReplayError(
                    f"the gateway refused the replay ({answer.status_code}): {answer.text[:300]}"
                )
            report.batches += 1
            report.records += len(batch)
            if answer.status_code != 200:
                report.failed_batches += 1
                continue
            _keep(report, batch, answer)
    return report


def _keep(report: ReplayReport, batch: pd.DataFrame, answer: httpx.Response) -> None:
    versions = {
        model: answer.headers.get(f"X-Model-Version-{model.upper()}", "")
        for model in ("dtc", "lda")
    }
    for record_id, true_code, codes in zip(
        batch["id"], batch[contract.TARGET], answer.json(), strict=True
    ):
        report.answers.append(
            Answer(
                record_id=str(record_id),
                true_code=str(true_code),
                codes={
                    "dtc": codes["dtc_fbi_code_output"],
                    "lda": codes["lda_fbi_code_output"],
                },
                versions=versions,
            )
        )
