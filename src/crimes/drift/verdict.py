"""Whether the drift the serving side reports calls for a retrain, and why: the decision the
`monitor_drift` DAG acts on, in code (and testable without Airflow)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    retrain: bool
    reason: str
    # (model, version, feature, psi) above the threshold, the worst first.
    drifted: tuple[tuple[str, str, str, float], ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "retrain": self.retrain,
            "reason": self.reason,
            "drifted": [
                {"model": m, "version": v, "feature": f, "psi": p} for m, v, f, p in self.drifted
            ],
        }


def judge(report: Mapping[str, Any], threshold: float) -> Verdict:
    """`report` is the gateway's `GET /drift` answer: per model, its served version and its
    window (records, and per feature the PSI once the window is judged)."""
    drifted: list[tuple[str, str, str, float]] = []
    judged = []
    for model, state in sorted(report.items()):
        window = state.get("window") or {}
        features = window.get("features") or []
        if not features:
            continue
        judged.append(f"{model} v{state.get('version')} ({window.get('records')} records)")
        for item in features:
            if item.get("judged", True) and float(item["psi"]) > threshold:
                drifted.append((model, str(state.get("version")), item["feature"], item["psi"]))
    drifted.sort(key=lambda d: -d[3])
    if drifted:
        shown = ", ".join(f"{f} of {m} v{v} at PSI {p:.3f}" for m, v, f, p in drifted[:5])
        more = f" and {len(drifted) - 5} more" if len(drifted) > 5 else ""
        return Verdict(True, f"drift above PSI {threshold}: {shown}{more}", tuple(drifted))
    if not judged:
        return Verdict(False, "no window holds enough records to judge drift yet")
    return Verdict(False, f"every feature below PSI {threshold}: {'; '.join(judged)}")
