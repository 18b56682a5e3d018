from __future__ import annotations

import pytest

from crimes.training.promotion import decide


@pytest.mark.parametrize(
    ("candidate", "champion", "has_champion", "newer", "recorded", "promoted"),
    [
        (0.96, None, False, True, None, True),  # first version above the floor
        (0.90, None, False, True, None, False),  # first version below the floor
        (0.99, 0.98, True, True, None, True),  # better on the same rows
        (0.98, 0.98, True, True, None, True),  # "at least": a newer version wins a tie
        (0.98, 0.98, True, False, None, False),  # an older racer loses the tie
        (0.97, 0.98, True, True, None, False),  # worse
        (0.50, 0.40, True, True, 0.99, True),  # compared: the floor is for first versions only
        # The champion could not be re-scored: the floor AND its recorded F1 must be cleared.
        (0.97, None, True, True, 0.96, True),
        (0.96, None, True, True, 0.97, False),
        (0.94, None, True, True, 0.90, False),
        (0.99, None, True, True, None, False),  # nothing recorded: it cannot be beaten blind
    ],
)
def test_policy(
    candidate: float,
    champion: float | None,
    has_champion: bool,
    newer: bool,
    recorded: float | None,
    promoted: bool,
) -> None:
    decision, reason = decide(
        candidate,
        champion,
        has_champion,
        0.95,
        candidate_is_newer=newer,
        champion_recorded_f1=recorded,
    )
    assert decision is promoted
    assert reason
