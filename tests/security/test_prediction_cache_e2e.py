"""Attack surface: the prediction cache (Redis). An entry that is not an answer (written by
anyone who can reach Redis) is a miss, logged, and the client gets the models' own answer,
never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from crimes.gateway.schemas import EXAMPLE
from crimes.local.launch import LocalProcess
from tests.security.conftest import own_gateway

pytestmark = pytest.mark.e2e

# A database of its own in the session's Redis: flushed here, used by no other test.
REDIS_URL = "redis://127.0.0.1:6379/11"


@pytest.fixture(scope="module")
def cached_gateway(
    attacked: dict[str, LocalProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalProcess]:
    redis.Redis.from_url(REDIS_URL).flushdb()
    folder = tmp_path_factory.mktemp("cached-gateway")
    try:
        with own_gateway(attacked, folder, CRIMES_GATEWAY_REDIS_URL=REDIS_URL) as gateway:
            yield gateway
    finally:
        redis.Redis.from_url(REDIS_URL).flushdb()


@pytest.mark.parametrize(
    "entry",
    [
        "not json",
        "[]",
        '{"models": {}}',
        '{"models": {"dtc": {"status": "bogus"}}, "unknown": [[]]}',
        '{"models": {"dtc": {"status": "ok", "labels": []}, "lda": {"status": "ok", '
        '"labels": []}}, "unknown": [[]]}',
        '{"models": {"dtc": {"status": "ok", "labels": ["01"]}, "lda": {"status": "ok", '
        '"labels": ["01"]}}, "unknown": 5}',
        '{"models": {"dtc": {"status": "ok", "labels": ["01"]}}, "unknown": [[]]}',
    ],
    ids=["not-json", "a-list", "no-models", "bad-status", "no-labels", "bad-unknown", "one-model"],
)
def test_a_malformed_cache_entry_is_a_miss_not_a_500(
    cached_gateway: LocalProcess, entry: str
) -> None:
    """Attack: overwrite the cached answer of a record with something that is not one."""
    store = redis.Redis.from_url(REDIS_URL)
    url = cached_gateway.url + "/predict"
    body = {"features": EXAMPLE}
    fresh = httpx.post(url, json=body, trust_env=False)
    assert fresh.status_code == 200, fresh.text
    keys = store.keys("crimes:predict:*")
    assert len(keys) == 1, keys
    for path in ("/predict", "/v2/predict"):
        store.set(keys[0], entry)
        answer = httpx.post(cached_gateway.url + path, json=body, trust_env=False)
        assert answer.status_code == 200, answer.text
        assert answer.headers.get("X-Cache") != "hit"
    again = httpx.post(url, json=body, trust_env=False)
    assert again.json() == fresh.json()
    store.flushdb()
