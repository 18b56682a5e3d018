"""The rules a drift-triggered retrain passes (crimes.drift.trigger), check by check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from crimes.drift import trigger
from crimes.drift.verdict import Verdict

POLICY = trigger.TriggerPolicy(cooldown_hours=24, consecutive_windows=3, min_clients=2)
START = datetime(2026, 12, 6, tzinfo=UTC)
CAPACITY = 1000
DRIFTED = Verdict(True, "drift above PSI 0.2: district", (("dtc", "3", "district", 0.9),))
NEW_VERSION = Verdict(True, "drift above PSI 0.2: district", (("dtc", "4", "district", 0.9),))
CALM = Verdict(False, "every feature below PSI 0.2")


def report(total: int, sources: int, version: str = "3") -> dict[str, Any]:
    window = {"records": CAPACITY, "capacity": CAPACITY, "total": total, "sources": sources}
    return {"dtc": {"version": version, "window": window}}


def run(
    checks: list[tuple[Verdict, dict[str, Any]]],
    active_runs: int = 0,
    state: dict[str, Any] | None = None,
    every: timedelta = timedelta(minutes=30),
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The checks in order, each reading the state the one before left."""
    state = state or {}
    entries = []
    for i, (verdict, found) in enumerate(checks):
        entry = trigger.decide(verdict, found, state, active_runs, POLICY, START + i * every)
        state = trigger.next_state(state, entry, keep=96)
        entries.append(entry)
    return entries, state


def test_three_new_windows_from_two_clients_trigger_once() -> None:
    checks = [(DRIFTED, report(CAPACITY * (i + 1), sources=2)) for i in range(4)]
    entries, _ = run(checks)
    assert [e["action"] for e in entries] == ["suppressed", "suppressed", "triggered", "suppressed"]
    assert "seen in 1 of the 3 windows" in entries[0]["reason"]
    assert [e["streak"] for e in entries] == [1, 2, 3, 4]
    assert "cooling down" in entries[3]["reason"]


def test_one_client_is_never_evidence() -> None:
    """Attack: one client sends one district, window after window."""
    checks = [(DRIFTED, report(CAPACITY * (i + 1), sources=1)) for i in range(10)]
    entries, _ = run(checks)
    assert {e["action"] for e in entries} == {"suppressed"}
    assert all("2 distinct clients" in e["reason"] for e in entries)


def test_the_same_window_seen_again_counts_once() -> None:
    """A quiet gateway: every check sees the same records; drift there is one window's."""
    checks = [(DRIFTED, report(CAPACITY + i, sources=2)) for i in range(10)]
    entries, _ = run(checks)
    assert {e["action"] for e in entries} == {"suppressed"}
    assert {e["streak"] for e in entries} == {1}


def test_a_calm_check_ends_the_streak_and_a_new_version_starts_over() -> None:
    checks = [
        (DRIFTED, report(1 * CAPACITY, sources=2)),
        (DRIFTED, report(2 * CAPACITY, sources=2)),
        (CALM, report(3 * CAPACITY, sources=2)),
        (DRIFTED, report(4 * CAPACITY, sources=2)),
        (NEW_VERSION, report(5 * CAPACITY, sources=2, version="4")),
    ]
    entries, _ = run(checks)
    assert [e["action"] for e in entries] == ["suppressed"] * 2 + ["calm"] + ["suppressed"] * 2
    assert [e["streak"] for e in entries] == [1, 2, 0, 1, 1]


def test_a_queued_or_running_retrain_suppresses_another() -> None:
    checks = [(DRIFTED, report(CAPACITY * (i + 1), sources=3)) for i in range(3)]
    entries, _ = run(checks, active_runs=1)
    assert entries[-1]["action"] == "suppressed"
    assert "1 ETL or training run(s) already queued or running" in entries[-1]["reason"]


def test_the_cooldown_ends() -> None:
    state = {"last_triggered": (START - timedelta(hours=25)).isoformat()}
    checks = [(DRIFTED, report(CAPACITY * (i + 1), sources=2)) for i in range(3)]
    entries, after = run(checks, state=state)
    assert entries[-1]["action"] == "triggered"
    assert after["last_triggered"] == entries[-1]["at"]
    within = {"last_triggered": (START - timedelta(hours=22)).isoformat()}
    entries, _ = run(checks, state=within)
    assert entries[-1]["action"] == "suppressed"
    assert "cooling down" in entries[-1]["reason"]


def test_every_entry_carries_its_evidence() -> None:
    (entry,), _ = run([(DRIFTED, report(CAPACITY, sources=2))])
    assert entry["drifted"] == [{"model": "dtc", "version": "3", "feature": "district", "psi": 0.9}]
    assert entry["windows"] == {
        "dtc": {"records": CAPACITY, "total": CAPACITY, "sources": 2, "version": "3"}
    }
    assert entry["mark"] == {"model": "dtc", "version": "3", "total": CAPACITY,
                             "capacity": CAPACITY}  # fmt: skip
