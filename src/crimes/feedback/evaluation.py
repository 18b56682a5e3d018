"""The join of served predictions with published labels, and what it says per served version.

Pure: frames in, frames out (the lake and MLflow are `labels`' and `results`' business), so
the DAG, `crimes evaluate` and the tests run the very same computation.

A served row is labelled when the portal has published its record: matched by `id` when the
client sent one, else by `case_number` (a case number that names two records matches none).
Realized accuracy is the share of labelled rows whose served code is the published one, with a
95 % Wilson interval. The label-free estimate is the served rows' expected accuracy from their
confidence (each row's top probability), calibrated on the version's own test split when a
calibration is known (else the raw confidence, which overstates a tree's accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from crimes.feedback.calibration import Calibration
from crimes.feedback.served import CHALLENGER, CHAMPION

Z_95: Final = 1.959963984540054
VERSION_KEYS: Final = ["model", "model_name", "role", "model_version"]
LABEL_COLUMNS: Final = ("record_id", "case_number", "true_code", "district", "labelled_at")


def wilson(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (NaN, NaN for no trials)."""
    if total <= 0:
        return math.nan, math.nan
    share = correct / total
    centre = share + z * z / (2 * total)
    spread = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    scale = 1 + z * z / total
    return (centre - spread) / scale, (centre + spread) / scale


def deduplicated(log: pd.DataFrame) -> pd.DataFrame:
    """One row per record, model and role of a request (a spilled file uploaded twice, a
    retried write, count once)."""
    return log.drop_duplicates(subset=["request_id", "row", "model", "role"], keep="first")


def joined(log: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The log's rows with the published label of their record where there is one: by id,
    else by case number."""
    rows = deduplicated(log).reset_index(drop=True)
    by_id = labels.dropna(subset=["record_id"]).drop_duplicates("record_id", keep="last")
    unique_cases = labels.dropna(subset=["case_number"]).drop_duplicates("case_number", keep=False)
    wanted = ["true_code", "district", "labelled_at"]
    found_by_id = rows[["record_id"]].merge(
        by_id[["record_id", *wanted]], on="record_id", how="left"
    )
    found_by_case = rows[["case_number"]].merge(
        unique_cases[["case_number", *wanted]], on="case_number", how="left"
    )
    use_id = rows["record_id"].notna().to_numpy()
    for column in wanted:
        rows[column] = np.where(use_id, found_by_id[column], found_by_case[column])
    rows["labelled"] = rows["true_code"].notna()
    rows["correct"] = rows["labelled"] & (rows["fbi_code"] == rows["true_code"])
    rows["day"] = pd.to_datetime(rows["served_at"], utc=True).dt.strftime("%Y-%m-%d")
    return rows


@dataclass(frozen=True)
class Evaluation:
    """Realized accuracy per served version, per day and per district; the confusion."""

    versions: pd.DataFrame
    days: pd.DataFrame
    districts: pd.DataFrame
    confusion: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "versions": self.versions,
            "days": self.days,
            "districts": self.districts,
            "confusion": self.confusion,
        }


def evaluate(
    log: pd.DataFrame,
    labels: pd.DataFrame,
    calibrations: Mapping[tuple[str, str], Calibration] | None = None,
) -> Evaluation:
    """The log joined with the labels, summarised per served version (and day, district)."""
    rows = joined(log, labels)
    rows["expected"] = _expected(rows, calibrations or {})
    labelled = rows[rows["labelled"]]
    return Evaluation(
        versions=_summary(rows, VERSION_KEYS),
        days=_summary(rows, [*VERSION_KEYS, "day"]),
        districts=_summary(labelled, [*VERSION_KEYS, "district"]),
        confusion=(
            labelled.groupby([*VERSION_KEYS, "true_code", "fbi_code"], dropna=False)
            .size()
            .rename("records")
            .reset_index()
            .rename(columns={"fbi_code": "served_code"})
        ),
    )


def _expected(rows: pd.DataFrame, calibrations: Mapping[tuple[str, str], Calibration]) -> Any:
    """Each row's expected correctness: its calibrated confidence (NaN: the model gave none)."""
    expected: npt.NDArray[np.float64] = np.array(rows["confidence"], dtype=np.float64)
    for (name, version), calibration in calibrations.items():
        mine = ((rows["model_name"] == name) & (rows["model_version"] == version)).to_numpy()
        if mine.any():
            expected[mine] = calibration.expected(expected[mine])
    return expected


def _summary(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    columns = [
        *keys,
        "predictions",
        "labelled",
        "correct",
        "accuracy",
        "ci_low",
        "ci_high",
        "estimate",
        "first_served",
        "last_served",
        "label_delay_hours",
    ]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    delay = (
        pd.to_datetime(rows["labelled_at"], utc=True) - pd.to_datetime(rows["served_at"], utc=True)
    ).dt.total_seconds() / 3600
    grouped = rows.assign(delay=delay).groupby(keys, dropna=False)
    table = grouped.agg(
        predictions=("fbi_code", "size"),
        labelled=("labelled", "sum"),
        correct=("correct", "sum"),
        estimate=("expected", "mean"),
        first_served=("served_at", "min"),
        last_served=("served_at", "max"),
        label_delay_hours=("delay", "median"),
    ).reset_index()
    table["labelled"] = table["labelled"].astype("int64")
    table["correct"] = table["correct"].astype("int64")
    table["accuracy"] = np.where(
        table["labelled"] > 0,
        table["correct"] / table["labelled"].where(table["labelled"] > 0),
        np.nan,
    )
    bounds = [
        wilson(int(c), int(n)) for c, n in zip(table["correct"], table["labelled"], strict=True)
    ]
    table["ci_low"] = [low for low, _ in bounds]
    table["ci_high"] = [high for _, high in bounds]
    return table[columns]


@dataclass(frozen=True)
class PairedAccuracy:
    """A champion and its challenger on the same labelled live records (the shadow's)."""

    records: int
    champion: float | None
    challenger: float | None


def paired(
    log: pd.DataFrame,
    labels: pd.DataFrame,
    model: str,
    champion_version: str,
    challenger_version: str,
) -> PairedAccuracy:
    """Realized accuracy of both versions on the labelled records both answered: the records
    the gateway served with the champion and shadowed to the challenger."""
    rows = joined(log, labels)
    rows = rows[(rows["model"] == model) & rows["labelled"]]

    def answers(role: str, version: str) -> pd.DataFrame:
        mine = rows[(rows["role"] == role) & (rows["model_version"] == version)]
        return mine[["request_id", "row", "correct"]]

    both = answers(CHAMPION, champion_version).merge(
        answers(CHALLENGER, challenger_version),
        on=["request_id", "row"],
        suffixes=("_champion", "_challenger"),
    )
    if both.empty:
        return PairedAccuracy(0, None, None)
    return PairedAccuracy(
        records=len(both),
        champion=float(both["correct_champion"].mean()),
        challenger=float(both["correct_challenger"].mean()),
    )


def accuracy_table(versions: pd.DataFrame) -> list[str]:
    """The versions table as `crimes evaluate` and the demo print it."""
    lines = [
        f"{'model':<6}{'role':<12}{'version':>8}{'predictions':>13}{'labelled':>10}"
        f"{'accuracy':>10}  {'95% interval':<15}{'estimate':>9}"
    ]
    for row in versions.to_dict("records"):
        labelled = int(row["labelled"])
        accuracy = "-" if labelled == 0 else f"{row['accuracy']:.4f}"
        interval = "-" if labelled == 0 else f"{row['ci_low']:.3f}-{row['ci_high']:.3f}"
        estimate = "-" if math.isnan(float(row["estimate"])) else f"{row['estimate']:.4f}"
        lines.append(
            f"{row['model']!s:<6}{row['role']!s:<12}{row['model_version']!s:>8}"
            f"{int(row['predictions']):>13}{labelled:>10}{accuracy:>10}  {interval:<15}"
            f"{estimate:>9}"
        )
    if len(lines) == 1:
        lines.append("no served predictions in the log yet")
    return lines
