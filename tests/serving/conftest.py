"""Fixtures of the serving tests: trained models shared by the whole session (seconds each)."""

from __future__ import annotations

import pytest

from tests.serving.models import Trained, train


@pytest.fixture(scope="session")
def dtc() -> Trained:
    return train("dtc")


@pytest.fixture(scope="session")
def dtc_other() -> Trained:
    """Another tree on the same data and transformation, predicting differently."""
    return train("dtc", max_depth=2)


@pytest.fixture(scope="session")
def lda() -> Trained:
    return train("lda")
