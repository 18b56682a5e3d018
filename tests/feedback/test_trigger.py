"""The realized accuracy trigger's rules, decided in code: K judged days in a row below the
threshold for the version a champion serves now; days with too few labels prove nothing; a
cooldown; no retrain while one is queued or running."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from crimes.feedback.trigger import AccuracyPolicy, decide

POLICY = AccuracyPolicy(min_accuracy=0.8, days=3, min_labelled=100, cooldown_hours=24)
NOW = datetime(2024, 9, 10, 12, tzinfo=UTC)


def days(rows: list[tuple[str, str, str, int, float]]) -> pd.DataFrame:
    """(model, version, day, labelled, accuracy) of champions."""
    return pd.DataFrame(
        [
            {
                "model": model,
                "role": "champion",
                "model_version": version,
                "day": day,
                "labelled": labelled,
                "accuracy": accuracy,
                "last_served": pd.Timestamp(f"{day}T12:00:00Z"),
            }
            for model, version, day, labelled, accuracy in rows
        ]
    )


LOW = days(
    [
        ("dtc", "3", "2024-09-06", 500, 0.70),
        ("dtc", "3", "2024-09-07", 500, 0.72),
        ("dtc", "3", "2024-09-08", 50, 0.95),  # too few labels: not judged
        ("dtc", "3", "2024-09-09", 500, 0.75),
        ("lda", "2", "2024-09-09", 500, 0.90),
    ]
)


def test_three_judged_days_below_the_threshold_trigger() -> None:
    entry = decide(LOW, {}, 0, POLICY, NOW)
    assert entry["action"] == "triggered"
    assert "dtc v3" in entry["reason"]
    assert "lda" not in entry["reason"]
    assert entry["models"]["dtc"]["streak"] == 3
    assert [d["day"] for d in entry["models"]["dtc"]["days"]] == [
        "2024-09-09",
        "2024-09-07",
        "2024-09-06",
    ]


def test_a_good_day_or_a_new_version_ends_the_streak() -> None:
    recovered = pd.concat([LOW, days([("dtc", "3", "2024-09-08", 500, 0.85)])])
    assert decide(recovered.drop(index=2), {}, 0, POLICY, NOW)["action"] == "calm"
    swapped = pd.concat([LOW, days([("dtc", "4", "2024-09-10", 500, 0.70)])])
    entry = decide(swapped, {}, 0, POLICY, NOW)
    assert entry["action"] == "calm"
    assert entry["models"]["dtc"] | {"days": []} == {"version": "4", "streak": 1, "days": []}


def test_a_cooldown_and_a_running_retrain_suppress() -> None:
    recent = {"last_triggered": datetime(2024, 9, 10, 1, tzinfo=UTC).isoformat()}
    cooling = decide(LOW, recent, 0, POLICY, NOW)
    assert cooling["action"] == "suppressed"
    assert "cooling down" in cooling["reason"]
    busy = decide(LOW, {}, 1, POLICY, NOW)
    assert busy["action"] == "suppressed"
    assert "already queued or running" in busy["reason"]
    long_ago = {"last_triggered": datetime(2024, 9, 1, tzinfo=UTC).isoformat()}
    assert decide(LOW, long_ago, 0, POLICY, NOW)["action"] == "triggered"


def test_nothing_served_is_calm() -> None:
    assert decide(days([]), {}, 0, POLICY, NOW)["action"] == "calm"
