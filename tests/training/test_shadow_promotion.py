"""The shadow promotion policy (pure): live evidence and the offline comparison must both pass."""

from __future__ import annotations

import pytest

from crimes.training.promotion import Comparison, PromotionError
from crimes.training.settings import TrainingSettings
from crimes.training.shadow_promotion import ShadowEvidence, decide, evidence_from_gateway

SETTINGS = TrainingSettings(
    shadow_min_records=1000, shadow_min_agreement=0.9, shadow_min_f1_gain=0.0
)
SCORED = Comparison(candidate_f1=0.97, champion_f1=0.96, rows=4000, rule="the test split")


def evidence(records: int = 5000, agreement: float | None = 0.95) -> ShadowEvidence:
    return ShadowEvidence("3", "4", records, agreement)


def test_both_bars_passed_promote() -> None:
    promoted, reason = decide(evidence(), SCORED, SETTINGS)
    assert promoted
    assert "live agreement 0.9500 on 5000 records" in reason
    assert "offline F1 0.970000 >= champion's 0.960000" in reason


@pytest.mark.parametrize(
    ("found", "scored", "said"),
    [
        (evidence(records=999), SCORED, "only 999 shadow records"),
        (evidence(agreement=0.89), SCORED, "live agreement 0.8900 < 0.9"),
        (evidence(agreement=None), SCORED, "live agreement 0.0000 < 0.9"),
        (evidence(), Comparison(0.95, 0.96, 4000, "rows"), "offline F1 0.950000 < champion's"),
        (evidence(), Comparison(0.99, None, 0, "champion not re-scorable: x"), "no offline"),
    ],
    ids=["too-few-records", "disagrees", "never-scored", "worse-offline", "not-comparable"],
)
def test_either_bar_missed_refuses(found: ShadowEvidence, scored: Comparison, said: str) -> None:
    promoted, reason = decide(found, scored, SETTINGS)
    assert not promoted
    assert said in reason


def test_a_required_gain_raises_the_offline_bar() -> None:
    strict = SETTINGS.model_copy(update={"shadow_min_f1_gain": 0.02})
    promoted, reason = decide(evidence(), SCORED, strict)
    assert not promoted
    assert "+ 0.02" in reason


def test_the_gateways_models_answer_gives_every_version_pair() -> None:
    answer = {
        "dtc": {
            "challenger": {
                "by_versions": [
                    {"champion_version": "3", "challenger_version": "4", "records": 10,
                     "agreement": 0.5},
                    {"champion_version": "5", "challenger_version": "4", "records": 20,
                     "agreement": None},
                ]
            }
        },
        "lda": {"challenger": None},
    }  # fmt: skip
    assert evidence_from_gateway(answer, "dtc") == [
        ShadowEvidence("3", "4", 10, 0.5),
        ShadowEvidence("5", "4", 20, None),
    ]
    with pytest.raises(PromotionError, match="no challenger for lda"):
        evidence_from_gateway(answer, "lda")


def test_labelled_evidence_decides_on_realized_accuracy_alone() -> None:
    from crimes.feedback.evaluation import PairedAccuracy
    from crimes.training.shadow_promotion import decide_labelled

    better = PairedAccuracy(records=800, champion=0.91, challenger=0.93)
    promoted, reason = decide_labelled(better, SETTINGS)
    assert promoted
    assert reason == (
        "realized accuracy 0.9300 >= champion's 0.9100 + 0.0 on the same 800 labelled live records"
    )
    worse = PairedAccuracy(records=800, champion=0.93, challenger=0.91)
    assert not decide_labelled(worse, SETTINGS)[0]
    strict = SETTINGS.model_copy(update={"shadow_min_accuracy_gain": 0.05})
    assert not decide_labelled(better, strict)[0]
