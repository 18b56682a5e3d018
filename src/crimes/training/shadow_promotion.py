"""Promotion from shadow evidence: the challenger takes `champion` only when live traffic and
held-out rows both speak for it.

- Live: the gateway shadowed the challenger on enough of the records it answered with the
  current champion (`shadow_min_records`), and the two agreed on at least
  `shadow_min_agreement` of them (a challenger that behaves differently live than offline is
  not trusted, whatever its score).
- Offline: the challenger's weighted F1 on the same held-out rows as the champion's (neither
  trained on them, each through its own transformation: `comparison`) is at least the
  champion's plus `shadow_min_f1_gain`.

When the prediction log holds at least `shadow_min_labelled` shadowed records whose FBI code
the portal has since published, the labels decide instead: the challenger's realized accuracy
on them must be at least the champion's on the same records plus `shadow_min_accuracy_gain`
(agreement and offline F1 only stand in for what labels say). The decision names the evidence
it used.

The counts must be for the versions the aliases name now; the decision, both scores and the
evidence are tagged on the challenger version whether it is promoted or not. On promotion the
champion alias moves to it and its challenger alias is removed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from crimes import registry
from crimes.feedback.evaluation import PairedAccuracy, paired
from crimes.lake import datasets
from crimes.lake.storage import Lake
from crimes.ops.logs import get_logger
from crimes.registry import CHALLENGER, CHAMPION, Tag, artifacts
from crimes.training import comparison, promotion
from crimes.training.promotion import Comparison, PromotionError
from crimes.training.settings import TrainingSettings

log = get_logger(__name__)


@dataclass(frozen=True)
class ShadowEvidence:
    """What the gateway counted for one (champion, challenger) pair of a model."""

    champion_version: str
    challenger_version: str
    records: int
    agreement: float | None


def evidence_from_gateway(models: Mapping[str, Any], kind: str) -> list[ShadowEvidence]:
    """Every version pair the gateway's `GET /models` reports for a model's challenger."""
    challenger = (models.get(kind) or {}).get("challenger")
    if not challenger:
        raise PromotionError(f"the gateway shadows no challenger for {kind}")
    return [
        ShadowEvidence(
            champion_version=str(pair["champion_version"]),
            challenger_version=str(pair["challenger_version"]),
            records=int(pair["records"]),
            agreement=pair["agreement"],
        )
        for pair in challenger.get("by_versions", [])
    ]


# The evidence a decision used.
LABELLED: Final = "labelled"
SHADOW_AND_OFFLINE: Final = "shadow_agreement_and_offline_f1"
NO_LABELS: Final = PairedAccuracy(0, None, None)


@dataclass(frozen=True)
class ShadowDecision:
    model: str
    champion_version: str
    challenger_version: str
    promoted: bool
    reason: str
    records: int
    agreement: float | None
    challenger_f1: float | None
    champion_f1: float | None
    rows: int
    evidence: str = SHADOW_AND_OFFLINE
    labelled: PairedAccuracy = NO_LABELS

    def as_tags(self) -> dict[str, str]:
        return {
            "shadow_promotion.decision": CHAMPION if self.promoted else CHALLENGER,
            "shadow_promotion.evidence": self.evidence,
            "shadow_promotion.labelled_records": str(self.labelled.records),
            "shadow_promotion.challenger_accuracy": _text(self.labelled.challenger),
            "shadow_promotion.champion_accuracy": _text(self.labelled.champion),
            "shadow_promotion.reason": self.reason[:4000],
            "shadow_promotion.champion_version": self.champion_version,
            "shadow_promotion.records": str(self.records),
            "shadow_promotion.agreement": "" if self.agreement is None else repr(self.agreement),
            "shadow_promotion.challenger_f1_weighted": _text(self.challenger_f1),
            "shadow_promotion.champion_f1_weighted": _text(self.champion_f1),
            "shadow_promotion.rows": str(self.rows),
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "labelled": dataclasses.asdict(self.labelled)}


def _text(value: float | None) -> str:
    return "" if value is None else repr(value)


def decide_labelled(labelled: PairedAccuracy, settings: TrainingSettings) -> tuple[bool, str]:
    """The policy on labelled live records, pure (enough of them: the caller's check)."""
    assert labelled.champion is not None
    assert labelled.challenger is not None
    bar = labelled.champion + settings.shadow_min_accuracy_gain
    verdict = ">=" if labelled.challenger >= bar else "<"
    return labelled.challenger >= bar, (
        f"realized accuracy {labelled.challenger:.4f} {verdict} champion's "
        f"{labelled.champion:.4f} + {settings.shadow_min_accuracy_gain} on the same "
        f"{labelled.records} labelled live records"
    )


def decide(
    evidence: ShadowEvidence, scored: Comparison, settings: TrainingSettings
) -> tuple[bool, str]:
    """The policy, pure: both bars, live and offline, or no promotion (and why)."""
    if evidence.records < settings.shadow_min_records:
        return False, (
            f"only {evidence.records} shadow records (fewer than {settings.shadow_min_records})"
        )
    agreement = evidence.agreement or 0.0
    if agreement < settings.shadow_min_agreement:
        return False, (
            f"live agreement {agreement:.4f} < {settings.shadow_min_agreement} on "
            f"{evidence.records} records"
        )
    if scored.champion_f1 is None:
        return False, f"no offline comparison on the same rows ({scored.rule})"
    bar = scored.champion_f1 + settings.shadow_min_f1_gain
    if scored.candidate_f1 < bar:
        return False, (
            f"offline F1 {scored.candidate_f1:.6f} < champion's {scored.champion_f1:.6f} + "
            f"{settings.shadow_min_f1_gain} on {scored.rows} rows"
        )
    return True, (
        f"live agreement {agreement:.4f} on {evidence.records} records and offline F1 "
        f"{scored.candidate_f1:.6f} >= champion's {scored.champion_f1:.6f} + "
        f"{settings.shadow_min_f1_gain} on {scored.rows} rows"
    )


def promote_from_shadow(
    client: Any,
    kind: str,
    found: list[ShadowEvidence],
    settings: TrainingSettings,
    lake: Lake,
) -> ShadowDecision:
    name = registry.MODELS[kind]
    champion = _by_alias(client, name, CHAMPION)
    challenger = _by_alias(client, name, CHALLENGER)
    if str(champion.version) == str(challenger.version):
        raise PromotionError(f"{name}: the challenger is the champion (version {champion.version})")
    evidence = next(
        (
            e
            for e in found
            if (e.champion_version, e.challenger_version)
            == (str(champion.version), str(challenger.version))
        ),
        ShadowEvidence(str(champion.version), str(challenger.version), 0, None),
    )
    labelled = labelled_evidence(lake, kind, str(champion.version), str(challenger.version))
    scored = _scored(client, name, champion, challenger, lake, settings)
    if labelled.records >= settings.shadow_min_labelled:
        used = LABELLED
        promoted, reason = decide_labelled(labelled, settings)
    else:
        used = SHADOW_AND_OFFLINE
        promoted, reason = decide(evidence, scored, settings)
        reason += (
            f" (labelled evidence: {labelled.records} records, fewer than "
            f"{settings.shadow_min_labelled})"
        )
    decision = ShadowDecision(
        model=kind,
        champion_version=str(champion.version),
        challenger_version=str(challenger.version),
        promoted=promoted,
        reason=reason,
        records=evidence.records,
        agreement=evidence.agreement,
        challenger_f1=scored.candidate_f1 if scored.champion_f1 is not None else None,
        champion_f1=scored.champion_f1,
        rows=scored.rows,
        evidence=used,
        labelled=labelled,
    )
    if promoted:
        # Decided against this champion: moved only if it still is the champion.
        now = promotion.current_champion(client, name)
        if now is None or str(now.version) != decision.champion_version:
            raise PromotionError(f"{name}: the champion moved while deciding; nothing changed")
        promotion.set_alias(client, name, CHAMPION, decision.challenger_version)
        client.delete_registered_model_alias(name, CHALLENGER)
    for key, value in decision.as_tags().items():
        client.set_model_version_tag(name, decision.challenger_version, key, value)
    log.info("shadow_promotion.decided", name=name, **decision.as_tags())
    return decision


def labelled_evidence(
    lake: Lake, kind: str, champion_version: str, challenger_version: str
) -> PairedAccuracy:
    """Both versions' realized accuracy on the shadowed records labelled since (the prediction
    log of the evaluation's window, joined with the published labels)."""
    from crimes.feedback import inputs
    from crimes.feedback.evaluate_served import EvaluationSettings, label_years

    settings = EvaluationSettings()
    since = datetime.now(UTC).date() - timedelta(days=settings.lookback_days)
    served = inputs.read_log(lake, since)
    if served.empty:
        return NO_LABELS
    labels = inputs.read_labels(lake, label_years(lake, settings))
    return paired(served, labels, kind, champion_version, challenger_version)


def _by_alias(client: Any, name: str, alias: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, alias)
    except Exception as error:
        raise PromotionError(f"{name} has no {alias} version: {error}") from error


def _scored(
    client: Any, name: str, champion: Any, challenger: Any, lake: Lake, settings: TrainingSettings
) -> Comparison:
    """The challenger and the champion on the same held-out rows (the challenger's dataset
    plays the candidate's part)."""
    import mlflow

    tags = challenger.tags or {}
    try:
        final = datasets.load_final(lake, int(tags[Tag.YEAR]), tags[Tag.DATASET])
        model = artifacts.load_version_model(mlflow.get_tracking_uri(), name, challenger.version)
        own_f1 = float(tags[Tag.TEST_F1_WEIGHTED])
    except Exception as error:
        return Comparison(0.0, None, 0, f"challenger not re-scorable: {error!r}")
    return comparison.compare(
        champion, name, model, final, own_f1, lake, settings.promotion_min_rows
    )
