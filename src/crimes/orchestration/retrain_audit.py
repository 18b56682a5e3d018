"""The retrain audit logs in the data lake: one entry per check (triggered, suppressed or calm,
with its evidence), never rewritten, and the small state the next check reads. Drift checks
(the recent windows with drift, the last trigger; the `monitor_drift` DAG runs one at a time)
and realized accuracy checks (the last trigger; `evaluate_served_predictions`) each have their
own log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import pandas as pd

from crimes.drift import trigger
from crimes.drift.verdict import Verdict
from crimes.feedback import trigger as accuracy_trigger
from crimes.lake.storage import Lake

PREFIX: Final = "chicago/crimes/audit/retrain"
STATE: Final = f"{PREFIX}/state.json"
ACCURACY_PREFIX: Final = "chicago/crimes/audit/accuracy"
ACCURACY_STATE: Final = f"{ACCURACY_PREFIX}/state.json"
# Checks remembered for the streak (a window may be seen by several checks in a row).
KEEP: Final = 96


def read_state(lake: Lake, key: str = STATE) -> dict[str, Any]:
    if not lake.exists(key):
        return {}
    found = lake.read_json(key)
    return found if isinstance(found, dict) else {}


def entries(lake: Lake, prefix: str = PREFIX) -> list[dict[str, Any]]:
    """Every audit entry of one log, oldest first."""
    state = f"{prefix}/state.json"
    keys = [k for k in lake.list(prefix) if k.endswith(".json") and k != state]
    return [lake.read_json(k) for k in keys]


def _write_entry(lake: Lake, prefix: str, entry: dict[str, Any], now: datetime) -> None:
    stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
    lake.write_json(f"{prefix}/date={now.date().isoformat()}/{stamp}.json", entry)


def check_accuracy(
    lake: Lake,
    days: pd.DataFrame,
    active_runs: int,
    policy: accuracy_trigger.AccuracyPolicy,
    run_id: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Decide on the champions' realized accuracy, write the entry, then the state."""
    now = now or datetime.now(UTC)
    state = read_state(lake, ACCURACY_STATE)
    entry = accuracy_trigger.decide(days, state, active_runs, policy, now) | {"run_id": run_id}
    _write_entry(lake, ACCURACY_PREFIX, entry, now)
    last = entry["at"] if entry["action"] == "triggered" else state.get("last_triggered")
    lake.write_json(ACCURACY_STATE, {"last_triggered": last})
    return entry


def check(
    lake: Lake,
    verdict: Verdict,
    report: dict[str, Any],
    active_runs: int,
    policy: trigger.TriggerPolicy,
    run_id: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Decide, write the entry (before the state: a crash between leaves the entry, and the
    next check only sees a shorter streak), then the state; the entry."""
    now = now or datetime.now(UTC)
    state = read_state(lake)
    entry = trigger.decide(verdict, report, state, active_runs, policy, now) | {"run_id": run_id}
    _write_entry(lake, PREFIX, entry, now)
    lake.write_json(STATE, trigger.next_state(state, entry, KEEP))
    return entry
