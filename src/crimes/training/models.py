"""The two models: a Decision Tree tuned with Optuna, and Linear Discriminant Analysis."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.tree import DecisionTreeClassifier

from crimes.ops.logs import get_logger
from crimes.training.settings import TrainingSettings

log = get_logger(__name__)

Matrix = npt.NDArray[np.float64]
Labels = npt.NDArray[Any]

# The reference's search space.
DTC_SPACE: dict[str, Any] = {
    "max_depth": (1, 30),
    "criterion": ("gini", "entropy"),
    "min_samples_split": (2, 20),
    "min_samples_leaf": (1, 20),
}
# Tried first, so a small trial budget still starts from a known-good corner of the space
# (deep trees: the FBI code follows from the IUCR code almost deterministically).
DTC_FIRST_GUESS: dict[str, Any] = {
    "max_depth": 30,
    "criterion": "gini",
    "min_samples_split": 2,
    "min_samples_leaf": 1,
}


@dataclass
class Fitted:
    kind: str
    model: Any
    params: dict[str, Any]
    cv_f1_weighted: float | None = None
    trials: int = 0
    extra_metrics: dict[str, float] = field(default_factory=dict)


def fit_lda(x_train: Matrix, y_train: Labels, settings: TrainingSettings) -> Fitted:
    # n_components only shapes transform(); predict() uses every discriminant direction.
    params = {"n_components": 2, "solver": "svd"}
    model = LinearDiscriminantAnalysis(**params).fit(x_train, y_train)
    return Fitted(kind="lda", model=model, params=params)


class TrialProgress:
    """An Optuna callback saying each finished trial: n/N, its CV score, the best so far and
    the time since the search started (a structured log line, and a line for `report`)."""

    def __init__(self, trials: int, report: Callable[[str], None] | None = None) -> None:
        self.trials = trials
        self.report = report
        self.started = time.perf_counter()

    def __call__(self, study: Any, trial: Any) -> None:
        elapsed = time.perf_counter() - self.started
        best = study.best_value if trial.value is not None else None
        log.info(
            "training.dtc.trial",
            trial=trial.number + 1,
            of=self.trials,
            cv_f1_weighted=trial.value,
            best=best,
            elapsed_s=round(elapsed, 1),
        )
        if self.report is not None:
            self.report(trial_line(trial.number + 1, self.trials, trial.value, best, elapsed))


def trial_line(
    number: int, of: int, value: float | None, best: float | None, elapsed: float
) -> str:
    score = "failed" if value is None else f"CV F1 {value:.6f}"
    best_text = "" if best is None else f", best {best:.6f}"
    return f"      trial {number}/{of}: {score}{best_text} ({elapsed:.1f} s)"


def search_dtc(
    x_train: Matrix,
    y_train: Labels,
    settings: TrainingSettings,
    callbacks: list[Callable[..., None]] | None = None,
    first_guess: dict[str, Any] | None = None,
    report: Callable[[str], None] | None = None,
) -> Fitted:
    """Optuna search (TPE, seeded) maximising the mean weighted F1 of stratified k-fold CV,
    then a refit of the best parameters on the whole training split."""
    import optuna

    folds = StratifiedKFold(n_splits=settings.cv_folds, shuffle=True, random_state=settings.seed)

    def objective(trial: optuna.Trial) -> float:
        model = DecisionTreeClassifier(
            max_depth=trial.suggest_int("max_depth", *DTC_SPACE["max_depth"]),
            criterion=trial.suggest_categorical("criterion", list(DTC_SPACE["criterion"])),
            min_samples_split=trial.suggest_int(
                "min_samples_split", *DTC_SPACE["min_samples_split"]
            ),
            min_samples_leaf=trial.suggest_int("min_samples_leaf", *DTC_SPACE["min_samples_leaf"]),
            random_state=settings.seed,
        )
        with warnings.catch_warnings():
            # The rare-class policy lives in the split; sklearn repeats it for every fold.
            warnings.filterwarnings("ignore", message="The least populated class")
            scores = cross_val_score(
                model, x_train, y_train, cv=folds, scoring="f1_weighted", n_jobs=settings.n_jobs
            )
        return float(np.mean(scores))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        study_name="dtc",
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
    )
    study.enqueue_trial(first_guess or DTC_FIRST_GUESS)
    progress = TrialProgress(settings.trials, report)
    study.optimize(objective, n_trials=settings.trials, callbacks=[*(callbacks or []), progress])
    best = dict(study.best_params)
    log.info("training.dtc.search_done", best=best, cv_f1_weighted=study.best_value)
    model = DecisionTreeClassifier(**best, random_state=settings.seed).fit(x_train, y_train)
    return Fitted(
        kind="dtc",
        model=model,
        params={**best, "random_state": settings.seed},
        cv_f1_weighted=float(study.best_value),
        trials=len(study.trials),
    )
