from __future__ import annotations

import pytest

from crimes.training.promotion import decide


@pytest.mark.parametrize(
    ("candidate", "champion", "has_champion", "newer", "promoted"),
    [
        (0.96, None, False, True, True),  # first version above the floor
        (0.90, None, False, True, False),  # first version below the floor
        (0.99, 0.98, True, True, True),  # better on the same test set
        (0.98, 0.98, True, True, True),  # "at least": a newer version wins a tie
        (0.98, 0.98, True, False, False),  # an older racer loses the tie
        (0.97, 0.98, True, True, False),  # worse
        (0.96, None, True, True, True),  # features changed: the floor decides
        (0.94, None, True, True, False),
    ],
)
def test_policy(
    candidate: float, champion: float | None, has_champion: bool, newer: bool, promoted: bool
) -> None:
    decision, reason = decide(candidate, champion, has_champion, 0.95, candidate_is_newer=newer)
    assert decision is promoted
    assert reason
