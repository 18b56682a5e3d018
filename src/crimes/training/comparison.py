"""The champion and the candidate scored on the same raw rows, each through its own
transformation, so promotion always compares, whatever the transformation versions.

The rows: every row that either version's dataset held out for testing and that neither
version trained on (rows are matched on all 16 features and the target). Why both test splits
and not only the candidate's: a candidate made from a small or skewed extract would otherwise be
judged only on its own narrow test rows, where it may look fine; the champion's held-out rows
show what it lost. When both were trained on the same dataset, that is its test split.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from crimes import contract
from crimes.lake import datasets
from crimes.lake.datasets import FinalData, HeldOutRows
from crimes.lake.storage import Lake
from crimes.ops.logs import get_logger
from crimes.registry import Tag, artifacts
from crimes.training import evaluate as evaluation
from crimes.training.promotion import Comparison
from crimes.transformation.document import TransformationDocument
from crimes.transformation.lookup import LookupTransformer

log = get_logger(__name__)

COLUMNS = [*contract.FEATURES, contract.TARGET]


@dataclass(frozen=True)
class Rows:
    """The rows both versions are scored on, and how they were chosen."""

    features: pd.DataFrame
    target: pd.Series
    rule: str

    @functools.cached_property
    def records(self) -> list[dict[str, Any]]:
        """The rows as a client sends them (JSON types, null for a missing coordinate), made
        once for both versions."""
        records: list[dict[str, Any]] = json.loads(self.features.to_json(orient="records"))
        return records

    @property
    def sha256(self) -> str:
        """A fingerprint of the rows (logged with the decision)."""
        hashed = pd.util.hash_pandas_object(self._frame(), index=False).to_numpy()
        return hashlib.sha256(np.sort(hashed).tobytes()).hexdigest()

    def _frame(self) -> pd.DataFrame:
        return self.features.assign(**{contract.TARGET: self.target.to_numpy()})


def _keys(features: pd.DataFrame, target: pd.Series) -> pd.Series:
    frame = contract.as_features_frame(features).assign(**{contract.TARGET: target.to_numpy()})
    return pd.util.hash_pandas_object(frame[COLUMNS], index=False)


def held_out_by_neither(candidate: HeldOutRows, champion: HeldOutRows) -> Rows:
    if candidate.dataset == champion.dataset:
        return Rows(
            candidate.features_test.reset_index(drop=True),
            candidate.y_test.reset_index(drop=True),
            f"the test split of dataset {candidate.dataset}, which both versions trained beside",
        )
    pool = pd.concat(
        [
            contract.as_features_frame(candidate.features_test).assign(
                **{contract.TARGET: candidate.y_test.to_numpy()}
            ),
            contract.as_features_frame(champion.features_test).assign(
                **{contract.TARGET: champion.y_test.to_numpy()}
            ),
        ],
        ignore_index=True,
    )
    keys = pd.util.hash_pandas_object(pool[COLUMNS], index=False)
    trained = set(_keys(candidate.features_train, candidate.y_train).tolist()) | set(
        _keys(champion.features_train, champion.y_train).tolist()
    )
    # Each distinct row once (a row in both test splits counts once), none either trained on.
    keep = ~keys.isin(trained) & ~keys.duplicated()
    chosen = pool[keep.to_numpy()].reset_index(drop=True)
    return Rows(
        chosen[list(contract.FEATURES)],
        chosen[contract.TARGET].astype(str),
        f"rows held out by dataset {candidate.dataset} (the candidate's) or {champion.dataset} "
        "(the champion's) that neither version trained on",
    )


def f1_on(model: Any, transformation: TransformationDocument, rows: Rows) -> float:
    """A version's weighted F1 on raw rows, through its own transformation."""
    matrix, _ = LookupTransformer(transformation).transform(rows.records)
    return evaluation.scores(rows.target.to_numpy(), model.predict(matrix))["test_f1_weighted"]


def compare(
    champion: Any,
    name: str,
    candidate_model: Any,
    candidate: FinalData,
    candidate_test_f1: float,
    lake: Lake,
    min_rows: int,
) -> Comparison:
    """Score the champion and the candidate on the same rows; a champion that cannot be
    re-scored gives a Comparison without its F1 (and the candidate's own test F1)."""
    import mlflow

    try:
        champion_data = _champion_data(champion, candidate, lake)
        rows = held_out_by_neither(candidate.raw_splits(), champion_data.rows)
        if len(rows.features) < min_rows:
            raise ValueError(
                f"only {len(rows.features)} rows neither version trained on (fewer than {min_rows})"
            )
        champion_model = artifacts.load_version_model(
            mlflow.get_tracking_uri(), name, champion.version
        )
        champion_f1 = f1_on(champion_model, champion_data.transformation, rows)
        candidate_f1 = f1_on(candidate_model, candidate.transformation, rows)
    except Exception as error:
        log.warning(
            "promotion.champion_not_rescorable",
            name=name,
            champion=champion.version,
            error=str(error),
        )
        return Comparison(candidate_test_f1, None, 0, f"champion not re-scorable: {error}")
    log.info(
        "promotion.compared",
        name=name,
        champion=champion.version,
        champion_f1=champion_f1,
        candidate_f1=candidate_f1,
        rows=len(rows.features),
    )
    return Comparison(candidate_f1, champion_f1, len(rows.features), rows.rule, rows.sha256)


@dataclass(frozen=True)
class _ChampionData:
    rows: HeldOutRows
    transformation: TransformationDocument


def _champion_data(champion: Any, candidate: FinalData, lake: Lake) -> _ChampionData:
    """The champion's own dataset (its splits) and transformation, both verified; the
    candidate's, already loaded, when both were trained on the same dataset."""
    tags = champion.tags or {}
    dataset, year = tags.get(Tag.DATASET), tags.get(Tag.YEAR)
    if not dataset or not year:
        raise ValueError(f"version {champion.version} names no dataset and year")
    if dataset == candidate.manifest["dataset"]:
        rows, transformation = candidate.raw_splits(), candidate.transformation
    else:
        manifest = datasets.dataset_manifest(lake, int(year), dataset)
        rows = datasets.load_raw_splits(lake, manifest)
        transformation = datasets.load_transformation(lake, manifest)
    if transformation.version != tags.get(Tag.TRANSFORMATION_VERSION):
        raise ValueError(
            f"dataset {dataset}'s transformation is not the one version {champion.version} "
            "is tagged with"
        )
    return _ChampionData(rows, transformation)
