"""The Optuna search says each trial as it finishes: n/N, its CV score, the best so far."""

from __future__ import annotations

import re
import warnings

from crimes import contract
from crimes.etl import synthetic
from crimes.etl.preprocess import preprocess
from crimes.training import models
from crimes.training.settings import TrainingSettings
from crimes.transformation import fitting


def test_every_trial_is_reported_with_the_best_so_far() -> None:
    data, _ = preprocess(synthetic.sample(600))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, matrix = fitting.fit_transform(data[list(contract.FEATURES)], data[contract.TARGET])
    lines: list[str] = []
    settings = TrainingSettings(trials=3, cv_folds=2, n_jobs=1)
    fitted = models.search_dtc(
        matrix.to_numpy(),
        data[contract.TARGET].astype(str).to_numpy(),
        settings,
        report=lines.append,
    )
    assert len(lines) == 3
    found = [re.search(r"trial (\d)/3: CV F1 (\S+), best (\S+) \(\d+\.\d s\)", s) for s in lines]
    assert all(found), lines
    scores = [float(m.group(2)) for m in found if m]
    bests = [float(m.group(3)) for m in found if m]
    assert bests == [max(scores[: i + 1]) for i in range(3)]
    assert fitted.cv_f1_weighted is not None
    assert round(fitted.cv_f1_weighted, 6) == bests[-1]
