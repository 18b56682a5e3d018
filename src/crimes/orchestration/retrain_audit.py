"""The retrain audit log in the data lake: one entry per drift check (triggered, suppressed or
calm, with its evidence), never rewritten, and the small state the next check reads (the recent
windows with drift, the last trigger). The `monitor_drift` DAG runs one check at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from crimes.drift import trigger
from crimes.drift.verdict import Verdict
from crimes.lake.storage import Lake

PREFIX: Final = "chicago/crimes/audit/retrain"
STATE: Final = f"{PREFIX}/state.json"
# Checks remembered for the streak (a window may be seen by several checks in a row).
KEEP: Final = 96


def read_state(lake: Lake) -> dict[str, Any]:
    if not lake.exists(STATE):
        return {}
    found = lake.read_json(STATE)
    return found if isinstance(found, dict) else {}


def entries(lake: Lake) -> list[dict[str, Any]]:
    """Every audit entry, oldest first."""
    keys = [k for k in lake.list(PREFIX) if k.endswith(".json") and k != STATE]
    return [lake.read_json(k) for k in keys]


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
    stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
    lake.write_json(f"{PREFIX}/date={now.date().isoformat()}/{stamp}.json", entry)
    lake.write_json(STATE, trigger.next_state(state, entry, KEEP))
    return entry
