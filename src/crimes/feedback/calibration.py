"""What a version's confidence is worth: on its own test split, the share of right answers per
confidence bin. The label-free estimate of its served accuracy maps each served row's
confidence through it (a depth-15 tree's leaves say 1.0 far more often than it is right).

Kept as JSON in a tag of the registered version (small: a few bins), written at training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

BINS: Final = 10


@dataclass(frozen=True)
class Calibration:
    edges: tuple[float, ...]  # BINS + 1 edges over [0, 1]
    accuracy: tuple[float, ...]  # per bin; NaN where the test split had no row

    @classmethod
    def fit(
        cls, confidence: npt.ArrayLike, correct: npt.ArrayLike, bins: int = BINS
    ) -> Calibration:
        scores = np.asarray(confidence, dtype=np.float64)
        right = np.asarray(correct, dtype=bool)
        edges = np.linspace(0.0, 1.0, bins + 1)
        which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
        accuracy = [
            float(right[which == b].mean()) if (which == b).any() else float("nan")
            for b in range(bins)
        ]
        return cls(tuple(float(e) for e in edges), tuple(accuracy))

    def expected(self, confidence: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Each row's expected correctness; a bin the test split never reached keeps the
        row's own confidence, and so does a row without one (NaN)."""
        edges = np.asarray(self.edges)
        accuracy = np.asarray(self.accuracy)
        which = np.clip(np.digitize(confidence, edges[1:-1]), 0, len(accuracy) - 1)
        mapped = accuracy[which]
        return np.where(np.isnan(mapped) | np.isnan(confidence), confidence, mapped)

    def dumps(self) -> str:
        rounded = [None if np.isnan(a) else round(a, 4) for a in self.accuracy]
        return json.dumps({"edges": [round(e, 4) for e in self.edges], "accuracy": rounded})

    @classmethod
    def loads(cls, text: str) -> Calibration | None:
        """A calibration from its tag; None for one that is not (never an error)."""
        try:
            value: Any = json.loads(text)
            edges = tuple(float(e) for e in value["edges"])
            accuracy = tuple(float("nan") if a is None else float(a) for a in value["accuracy"])
        except (ValueError, TypeError, KeyError):
            return None
        if len(edges) != len(accuracy) + 1 or len(accuracy) < 1:
            return None
        return cls(edges, accuracy)
