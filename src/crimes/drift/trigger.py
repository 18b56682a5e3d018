"""Whether a drift verdict may start a retrain: the rules that keep anyone who can send records
from making the system retrain at will, decided in code (and testable without Airflow).

A retrain starts only when drift was seen in `consecutive_windows` windows in a row (a window
counts once the gateway served a whole window's worth of new records since the last one
counted), each window's records from at least `min_clients` distinct clients, no retrain was
triggered within `cooldown_hours`, and no ETL or training run is queued or running. Every check
gives an audit entry, whatever it decided, with its evidence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from crimes.drift.verdict import Verdict

Action = Literal["triggered", "suppressed", "calm"]


@dataclass(frozen=True)
class TriggerPolicy:
    cooldown_hours: float
    consecutive_windows: int
    min_clients: int


@dataclass(frozen=True)
class Mark:
    """The window a check saw drift in: its model's served version and the records the window
    had ever taken then (a later window is a new one once that grew by its capacity)."""

    model: str
    version: str
    total: int
    capacity: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, found: Mapping[str, Any] | None) -> Mark | None:
        if not found:
            return None
        return cls(str(found["model"]), str(found["version"]), int(found["total"]),
                   int(found["capacity"]))  # fmt: skip

    def follows(self, earlier: Mark) -> bool:
        """This window is a later one of the same served version, with no record in common."""
        return (self.model, self.version) == (
            earlier.model,
            earlier.version,
        ) and self.total - earlier.total >= self.capacity


def evidence(verdict: Verdict, report: Mapping[str, Any], min_clients: int) -> Mark | None:
    """The window of the worst drifted model whose records came from enough clients; None
    when no drifted window qualifies."""
    for model, version, _feature, _psi in verdict.drifted:  # the worst first
        window = (report.get(model) or {}).get("window") or {}
        if int(window.get("sources", 0)) >= min_clients:
            return Mark(model, version, int(window.get("total", 0)),
                        int(window.get("capacity", 1)))  # fmt: skip
    return None


def streak(current: Mark, recent: Sequence[Mark | None]) -> int:
    """Windows in a row with drift, `current` the newest; `recent` the earlier checks' marks,
    newest first (None: a check without drift, which ends the streak). Checks that saw the same
    window again do not count twice."""
    counted, last = 1, current
    for mark in recent:
        if mark is None:
            break
        if last.follows(mark):
            counted, last = counted + 1, mark
        elif (mark.model, mark.version) != (last.model, last.version):
            break
    return counted


def decide(
    verdict: Verdict,
    report: Mapping[str, Any],
    state: Mapping[str, Any],
    active_runs: int,
    policy: TriggerPolicy,
    now: datetime,
) -> dict[str, Any]:
    """The audit entry of one check: its action, why, and the evidence. `state` is what the
    earlier checks left (`recent` marks, newest first, and `last_triggered`)."""
    mark = evidence(verdict, report, policy.min_clients)
    recent = [Mark.of(m) for m in state.get("recent", [])]
    entry: dict[str, Any] = {
        "at": now.isoformat(),
        "drifted": verdict.as_dict()["drifted"],
        "windows": {
            model: {k: (found.get("window") or {}).get(k) for k in ("records", "total", "sources")}
            | {"version": found.get("version")}
            for model, found in sorted(report.items())
        },
        "mark": mark.as_dict() if mark else None,
        "active_runs": active_runs,
    }
    entry["streak"] = streak(mark, recent) if mark else 0
    action, reason = _action(verdict, mark, entry["streak"], state, active_runs, policy, now)
    return entry | {"action": action, "reason": reason}


def _action(
    verdict: Verdict,
    mark: Mark | None,
    seen: int,
    state: Mapping[str, Any],
    active_runs: int,
    policy: TriggerPolicy,
    now: datetime,
) -> tuple[Action, str]:
    if not verdict.retrain:
        return "calm", verdict.reason
    if mark is None:
        return "suppressed", (
            f"{verdict.reason}; but no drifted window holds records from "
            f"{policy.min_clients} distinct clients"
        )
    if seen < policy.consecutive_windows:
        return "suppressed", (
            f"{verdict.reason}; seen in {seen} of the {policy.consecutive_windows} windows in a "
            "row a retrain needs"
        )
    last = state.get("last_triggered")
    if last and now - datetime.fromisoformat(last) < timedelta(hours=policy.cooldown_hours):
        allowed = datetime.fromisoformat(last) + timedelta(hours=policy.cooldown_hours)
        return "suppressed", (
            f"{verdict.reason}; cooling down: a retrain was triggered at {last}, the next is "
            f"allowed from {allowed.isoformat()}"
        )
    if active_runs:
        return "suppressed", (
            f"{verdict.reason}; {active_runs} ETL or training run(s) already queued or running"
        )
    return "triggered", verdict.reason


def next_state(state: Mapping[str, Any], entry: Mapping[str, Any], keep: int) -> dict[str, Any]:
    """What the next check reads: the last `keep` marks (newest first), the last trigger."""
    recent = [entry["mark"], *state.get("recent", [])][:keep]
    last = entry["at"] if entry["action"] == "triggered" else state.get("last_triggered")
    return {"recent": recent, "last_triggered": last}
