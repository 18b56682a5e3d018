"""Attack surface: the data the models learn from. The project's synthetic sample is a demo's
stand-in: it is no source but where a deployment allows it, and a version trained on it never
takes `champion` outside the demo."""

from __future__ import annotations

import pytest

from crimes.etl.extract import extract
from crimes.etl.settings import EtlSettings
from crimes.etl.source_policy import SourceRefused
from crimes.local.demo import DEMO_ALLOWANCES
from crimes.training.settings import TrainingSettings


def test_a_synthetic_source_is_refused_where_no_deployment_allows_it() -> None:
    """Attack: trigger the ETL with conf {"source": "synthetic:100000"} to replace real data."""
    with pytest.raises(SourceRefused, match="synthetic sources are off"):
        extract(EtlSettings(source="synthetic:100000"))


def test_only_the_demo_allows_synthetic_data_and_champions(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EtlSettings().source_allow_synthetic is False
    assert TrainingSettings().allow_synthetic_champion is False
    for name, value in DEMO_ALLOWANCES.items():
        monkeypatch.setenv(name, value)
    assert EtlSettings().source_allow_synthetic is True
    assert TrainingSettings().allow_synthetic_champion is True


def test_a_version_trained_on_synthetic_data_stays_challenger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The decision for such a version, whatever its score: `challenger`, never compared."""
    from crimes import registry
    from crimes.training import pipeline
    from crimes.training.evaluate import Evaluation

    moved: list[tuple[str, str, str]] = []
    tagged: dict[str, str] = {}

    class Registry:  # records what the decision writes (the alias and the version's tags)
        def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
            moved.append((name, alias, version))

        def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
            tagged[key] = value

    monkeypatch.setattr("mlflow.set_tags", lambda tags: None)
    result = Evaluation({"test_f1_weighted": 0.99999}, {}, "", [], None)
    decision = pipeline.synthetic_stays_challenger(Registry(), "dtc_model_prod", "9", result)
    assert not decision.promoted
    assert moved == [("dtc_model_prod", registry.CHALLENGER, "9")]
    assert tagged["promotion.decision"] == registry.CHALLENGER
    assert "synthetic" in tagged["promotion.reason"]
