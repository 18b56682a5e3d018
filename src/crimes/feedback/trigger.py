"""Whether the champions' realized accuracy calls for a retrain: decided in code, like the drift
trigger (`crimes.drift.trigger`), with the same guards.

A model's champion calls for one when, on each of its last `days` served days with at least
`min_labelled` labelled records (a day with fewer proves nothing), its realized accuracy was
below `min_accuracy`; no retrain was triggered this way within `cooldown_hours`; and no ETL or
training run is queued or running. Every check gives an audit entry, whatever it decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from crimes.feedback.served import CHAMPION


@dataclass(frozen=True)
class AccuracyPolicy:
    min_accuracy: float
    days: int
    min_labelled: int
    cooldown_hours: float


def champion_days(days: pd.DataFrame, model: str, min_labelled: int) -> tuple[str, pd.DataFrame]:
    """The version a model's champion serves now (the one served last) and its judged days,
    newest first."""
    mine = days[(days["model"] == model) & (days["role"] == CHAMPION)]
    if mine.empty:
        return "", mine
    version = str(mine.sort_values("last_served")["model_version"].iloc[-1])
    judged = mine[(mine["model_version"] == version) & (mine["labelled"] >= min_labelled)]
    return version, judged.sort_values("day", ascending=False)


def low_streak(judged: pd.DataFrame, min_accuracy: float) -> int:
    """Judged days in a row, from the newest, with realized accuracy below the threshold."""
    streak = 0
    for accuracy in judged["accuracy"]:
        if not accuracy < min_accuracy:
            break
        streak += 1
    return streak


def decide(
    days: pd.DataFrame,
    state: Mapping[str, Any],
    active_runs: int,
    policy: AccuracyPolicy,
    now: datetime,
) -> dict[str, Any]:
    """The audit entry of one check: its action (triggered, suppressed, calm), why, and the
    evidence per model. `state`: what the earlier checks left (`last_triggered`)."""
    evidence: dict[str, Any] = {}
    low: list[str] = []
    for model in sorted(set(days["model"])) if not days.empty else []:
        version, judged = champion_days(days, model, policy.min_labelled)
        streak = low_streak(judged, policy.min_accuracy)
        evidence[model] = {
            "version": version,
            "streak": streak,
            "days": [
                {"day": str(day), "labelled": int(labelled), "accuracy": float(accuracy)}
                for day, labelled, accuracy in judged.head(policy.days)[
                    ["day", "labelled", "accuracy"]
                ].itertuples(index=False)
            ],
        }
        if streak >= policy.days:
            low.append(f"{model} v{version}")
    entry: dict[str, Any] = {"at": now.isoformat(), "models": evidence, "active_runs": active_runs}
    if not low:
        reason = (
            f"no champion below {policy.min_accuracy:.0%} realized accuracy on {policy.days} "
            "judged days in a row"
        )
        return entry | {"action": "calm", "reason": reason}
    reason = (
        f"realized accuracy of {', '.join(low)} below {policy.min_accuracy:.0%} on "
        f"{policy.days} judged days in a row"
    )
    last = state.get("last_triggered")
    if last and now - datetime.fromisoformat(last) < timedelta(hours=policy.cooldown_hours):
        return entry | {
            "action": "suppressed",
            "reason": f"{reason}; cooling down: a retrain was triggered at {last}",
        }
    if active_runs:
        return entry | {
            "action": "suppressed",
            "reason": f"{reason}; {active_runs} ETL or training run(s) already queued or running",
        }
    return entry | {"action": "triggered", "reason": reason}
