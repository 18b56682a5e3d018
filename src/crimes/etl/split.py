"""The train/test split: stratified by FBI code with a fixed seed.

Policy for classes too rare to stratify: a class needs at least `MIN_STRATIFIED_ROWS` rows to be
split in proportion; rarer classes go wholly to the training split (a model can still learn them,
and a test set cannot measure a class from one row anyway). They are counted and logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pandas as pd
from sklearn.model_selection import train_test_split

from crimes import contract
from crimes.ops.logs import get_logger

log = get_logger(__name__)

MIN_STRATIFIED_ROWS: Final = 2


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    train_only_classes: tuple[str, ...]


def split(data: pd.DataFrame, test_size: float, seed: int) -> Split:
    """Split a features+target frame; rows keep the preprocessing's (sorted) order within each."""
    counts = data[contract.TARGET].value_counts()
    rare = tuple(sorted(str(c) for c in counts[counts < MIN_STRATIFIED_ROWS].index))
    is_rare = data[contract.TARGET].isin(rare)
    common = data[~is_rare]
    train, test = train_test_split(
        common, test_size=test_size, random_state=seed, stratify=common[contract.TARGET]
    )
    if rare:
        log.warning("split.train_only_classes", classes=rare, rows=int(is_rare.sum()))
    train = pd.concat([train, data[is_rare]]).sort_index()
    return Split(
        train=train.reset_index(drop=True),
        test=test.sort_index().reset_index(drop=True),
        train_only_classes=rare,
    )
