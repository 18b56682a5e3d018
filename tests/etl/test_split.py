from __future__ import annotations

import pandas as pd

from crimes import contract
from crimes.etl.split import split


def frame(counts: dict[str, int]) -> pd.DataFrame:
    labels = [label for label, n in counts.items() for _ in range(n)]
    return pd.DataFrame({"row": range(len(labels)), contract.TARGET: labels})


def test_stratified_with_a_fixed_seed() -> None:
    data = frame({"06": 700, "08B": 200, "14": 100})
    first = split(data, test_size=0.3, seed=42)
    again = split(data, test_size=0.3, seed=42)
    pd.testing.assert_frame_equal(first.test, again.test)
    assert len(first.test) == 300
    assert first.test[contract.TARGET].value_counts().to_dict() == {"06": 210, "08B": 60, "14": 30}
    assert set(first.train.row).isdisjoint(first.test.row)
    assert first.test.row.is_monotonic_increasing


def test_classes_too_rare_to_stratify_go_to_train() -> None:
    data = frame({"06": 50, "08B": 50, "01B": 1})
    parts = split(data, test_size=0.3, seed=1)
    assert parts.train_only_classes == ("01B",)
    assert "01B" in set(parts.train[contract.TARGET])
    assert "01B" not in set(parts.test[contract.TARGET])
    assert len(parts.train) + len(parts.test) == len(data)
