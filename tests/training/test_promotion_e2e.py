"""Promotion against the real MLflow registry: aliases move only as the policy says, and
racing promotions end with the best version as champion, never a missing one."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from crimes import registry
from crimes.registry import Tag
from crimes.settings import TrackingSettings
from crimes.training import promotion

pytestmark = pytest.mark.e2e

FLOOR = 0.9
TF = "tf-aaaaaaaaaaaaaaaa"


@pytest.fixture
def client(stack_env: dict[str, str]) -> Any:
    import mlflow

    return mlflow.MlflowClient(TrackingSettings().tracking_uri)


@pytest.fixture
def name() -> str:
    return f"promotion_test_{uuid.uuid4().hex[:8]}"


def register(client: Any, name: str, f1: float, transformation: str = TF) -> str:
    """A real registered version (a tiny model) whose test F1 is `f1`."""
    import mlflow

    model = DummyClassifier(strategy="most_frequent").fit(
        np.zeros((4, 1)), ["06", "06", "07", "06"]
    )
    mlflow.set_tracking_uri(TrackingSettings().tracking_uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=name, pip_requirements=["scikit-learn"]
        )
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, Tag.TRANSFORMATION_VERSION, transformation)
    client.set_model_version_tag(name, version, Tag.TEST_F1_WEIGHTED, repr(f1))
    return version


def comparer(
    client: Any, name: str, f1: float, rescorable: bool = True
) -> Callable[[Any], promotion.Comparison]:
    # Both "on the same rows": here what each version was registered with.
    def compare(champion: Any) -> promotion.Comparison:
        if not rescorable:
            return promotion.Comparison(f1, None, 0, "champion not re-scorable: test")
        tags = client.get_model_version(name, champion.version).tags
        return promotion.Comparison(f1, float(tags[Tag.TEST_F1_WEIGHTED]), 10, "test rows")

    return compare


def promote(client: Any, name: str, version: str, f1: float, rescorable: bool = True) -> Any:
    return promotion.promote(
        client, name, version, f1, comparer(client, name, f1, rescorable), floor=FLOOR
    )


def champion_of(client: Any, name: str) -> str:
    return str(client.get_model_version_by_alias(name, registry.CHAMPION).version)


def test_first_version_above_the_floor_is_champion(client: Any, name: str) -> None:
    version = register(client, name, 0.95)
    decision = promote(client, name, version, 0.95)
    assert decision.promoted
    assert champion_of(client, name) == version


def test_first_version_below_the_floor_is_only_challenger(client: Any, name: str) -> None:
    version = register(client, name, 0.5)
    assert not promote(client, name, version, 0.5).promoted
    assert promotion.current_champion(client, name) is None
    assert str(client.get_model_version_by_alias(name, registry.CHALLENGER).version) == version


def test_a_worse_candidate_is_challenger_and_the_champion_stays(client: Any, name: str) -> None:
    first = register(client, name, 0.99)
    promote(client, name, first, 0.99)
    worse = register(client, name, 0.97)
    decision = promote(client, name, worse, 0.97)
    assert not decision.promoted
    assert decision.champion_f1 == 0.99
    assert champion_of(client, name) == first
    assert str(client.get_model_version_by_alias(name, registry.CHALLENGER).version) == worse


def test_a_better_or_equal_candidate_takes_champion(client: Any, name: str) -> None:
    first = register(client, name, 0.97)
    promote(client, name, first, 0.97)
    better = register(client, name, 0.99)
    assert promote(client, name, better, 0.99).promoted
    assert champion_of(client, name) == better
    equal = register(client, name, 0.99)
    assert promote(client, name, equal, 0.99).promoted
    assert champion_of(client, name) == equal


def test_a_champion_that_cannot_be_rescored_is_beaten_only_by_its_recorded_f1(
    client: Any, name: str
) -> None:
    first = register(client, name, 0.95)
    promote(client, name, first, 0.95)
    below = register(client, name, 0.93, transformation="tf-bbbbbbbbbbbbbbbb")
    assert not promote(client, name, below, 0.93, rescorable=False).promoted
    above = register(client, name, 0.96, transformation="tf-bbbbbbbbbbbbbbbb")
    decision = promote(client, name, above, 0.96, rescorable=False)
    assert decision.promoted
    assert decision.champion_f1 is None
    assert champion_of(client, name) == above


def test_repeated_promotion_is_idempotent(client: Any, name: str) -> None:
    version = register(client, name, 0.95)
    promote(client, name, version, 0.95)
    again = promote(client, name, version, 0.95)
    assert again.promoted
    assert champion_of(client, name) == version


def race_promotions(
    client: Any, name: str, candidates: list[tuple[str, float]]
) -> list[BaseException]:
    """Promote every (version, f1) at once, one thread each; the errors they raised."""
    barrier = threading.Barrier(len(candidates))
    errors: list[BaseException] = []

    def race(version: str, f1: float) -> None:
        try:
            barrier.wait()
            promote(client, name, version, f1)
        except BaseException as error:  # collected and asserted on in the test thread
            errors.append(error)

    threads = [threading.Thread(target=race, args=pair) for pair in candidates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_racing_promotions_end_with_the_best_existing_version(client: Any, name: str) -> None:
    base = register(client, name, 0.95)
    promote(client, name, base, 0.95)
    scores = [0.96, 0.99, 0.97, 0.98]
    versions = [register(client, name, f1) for f1 in scores]
    assert not race_promotions(client, name, list(zip(versions, scores, strict=True)))
    best = versions[scores.index(max(scores))]
    assert champion_of(client, name) == best
    assert client.get_model_version(name, best).status == "READY"


def test_racing_challengers_all_land(client: Any, name: str) -> None:
    """Losers racing for `challenger` collide in the registry's insert; none may fail."""
    base = register(client, name, 0.99)
    promote(client, name, base, 0.99)
    scores = [0.90 + i / 100 for i in range(4)]
    versions = [register(client, name, f1) for f1 in scores]
    assert not race_promotions(client, name, list(zip(versions, scores, strict=True)))
    assert champion_of(client, name) == base
    assert str(client.get_model_version_by_alias(name, registry.CHALLENGER).version) in versions


def test_a_worse_retrain_on_a_skewed_extract_is_only_challenger(
    trained: dict[str, Any], client: Any, real_data: Path, tmp_path: Path
) -> None:
    """The acceptance case: a champion trained on the real 2024 data; an ETL on a small, skewed
    extract (two districts, as a portal CSV export) gives a candidate with another
    transformation. Compared on the same raw rows it is worse: challenger, and the champion
    keeps serving; the decision, both scores and the rows are on the version and its run."""
    import pandas as pd

    from crimes.etl import pipeline as etl
    from crimes.etl.settings import EtlSettings
    from crimes.lake import layout
    from crimes.lake.storage import Lake
    from crimes.training import pipeline as training
    from crimes.training.settings import TrainingSettings
    from tests.support.stack import ROWS, YEAR

    frame = pd.read_csv(real_data, dtype=str, keep_default_na=False, na_values=[""], nrows=ROWS)
    skewed = frame[frame["district"].isin(["001", "002"])].head(1500)
    extract = tmp_path / "two-districts.csv"
    skewed.to_csv(extract, index=False)
    champions = {
        name: str(client.get_model_version_by_alias(name, registry.CHAMPION).version)
        for name in registry.MODELS.values()
    }
    lake = Lake()
    pointer = layout.pointer_key(YEAR)
    published = lake.read_bytes(pointer)
    try:
        manifest = etl.run_etl(
            EtlSettings(source=str(extract), year=YEAR, source_folder=extract.parent), lake
        )
        assert manifest["transformation_version"] != trained["transformation_version"]
        summaries = training.run_training(TrainingSettings(year=YEAR, trials=2, cv_folds=2))
    finally:
        lake.write_bytes(pointer, published)  # the other tests read the session's dataset
    for summary in summaries:
        assert not summary.promoted, summary.reason
        assert champions[summary.name] == champion_of(client, summary.name)
        challenger = client.get_model_version_by_alias(summary.name, registry.CHALLENGER)
        assert str(challenger.version) == summary.version
        for tags in (challenger.tags, client.get_run(summary.run_id).data.tags):
            assert tags["promotion.decision"] == "challenger"
            assert tags["promotion.champion_version"] == champions[summary.name]
            candidate, champion = (
                float(tags[f"promotion.{who}_f1_weighted"]) for who in ("candidate", "champion")
            )
            assert candidate < champion
            assert int(tags["promotion.rows"]) >= 1000
            assert manifest["dataset"] in tags["promotion.rows_rule"]
            assert trained["dataset"] in tags["promotion.rows_rule"]
            assert len(tags["promotion.rows_sha256"]) == 64
