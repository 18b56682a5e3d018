"""The rows promotion compares on: held out by either dataset, trained on by neither."""

from __future__ import annotations

import pandas as pd

from crimes import contract
from crimes.lake.datasets import HeldOutRows
from crimes.training.comparison import held_out_by_neither
from tests.support.records import REFERENCE_EXAMPLE


def rows(*hours: int) -> tuple[pd.DataFrame, pd.Series]:
    """Records that differ by their hour; the target is the reference's."""
    frame = contract.as_features_frame(
        pd.DataFrame([{**REFERENCE_EXAMPLE, "hora": h} for h in hours])
    )
    return frame, pd.Series(["07"] * len(hours))


def split(dataset: str, train: tuple[int, ...], test: tuple[int, ...]) -> HeldOutRows:
    (features_train, y_train), (features_test, y_test) = rows(*train), rows(*test)
    return HeldOutRows(dataset, features_train, y_train, features_test, y_test)


def test_rows_either_held_out_and_neither_trained_on_each_once() -> None:
    candidate = split("ds-new", train=(0, 1, 2), test=(3, 4, 10))
    champion = split("ds-old", train=(3, 5, 6), test=(4, 7, 2))
    chosen = held_out_by_neither(candidate, champion)
    # 3: the champion trained on it; 2: the candidate did; 4: in both test splits, once.
    assert sorted(chosen.features["hora"]) == [4, 7, 10]
    assert "ds-new" in chosen.rule
    assert "ds-old" in chosen.rule
    assert len(chosen.records) == 3
    assert chosen.sha256 == held_out_by_neither(candidate, champion).sha256


def test_one_dataset_for_both_is_its_test_split() -> None:
    same = split("ds-1", train=(0, 1), test=(2, 3))
    chosen = held_out_by_neither(same, same)
    assert list(chosen.features["hora"]) == [2, 3]
