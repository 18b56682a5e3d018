"""Attack surface: the prediction routes' bodies. A small body must never buy a large amount of
work or a large answer: the record count is checked before any record is, naming problems
stops at the first few, and every bad body gets a short 422 naming the field."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from crimes.gateway.bodies import MAX_PROBLEMS
from crimes.gateway.schemas import EXAMPLE
from crimes.local.launch import LocalProcess
from tests.support.load import rss_mib

pytestmark = pytest.mark.e2e

ANSWER_BYTES = 4096
GROWTH_MIB = 10.0


def _post(gateway: LocalProcess, path: str, content: bytes) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    answer = httpx.post(
        gateway.url + path,
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
        trust_env=False,
    )
    return answer, time.perf_counter() - started


def _fields(answer: httpx.Response) -> list[str]:
    return [problem["field"] for problem in answer.json()["detail"]]


def test_twenty_thousand_empty_records_are_refused_by_their_count_before_any_is_read(
    attacked: dict[str, LocalProcess],
) -> None:
    """Attack: 60 KB of `{}` records (20,000) to make the gateway validate and describe each."""
    gateway = attacked["gateway"]
    body = json.dumps({"features": [{}] * 20_000}).encode()
    assert len(body) < 100_000
    before = rss_mib(gateway.process.pid)
    for _ in range(5):
        answer, _seconds = _post(gateway, "/predict/batch", body)
        assert answer.status_code == 422
        assert len(answer.content) <= ANSWER_BYTES
        assert answer.json()["detail"] == [
            {
                "field": "features",
                "message": "at most 1000 records per batch, got 20000",
                "type": "too_long",
            }
        ]
    assert rss_mib(gateway.process.pid) - before <= GROWTH_MIB
    assert httpx.post(gateway.url + "/predict", json={"features": EXAMPLE}).status_code == 200


def test_a_full_batch_of_bad_records_names_the_first_problems_and_says_it_stopped(
    attacked: dict[str, LocalProcess],
) -> None:
    """Attack: the most records a batch may hold, each missing every field."""
    gateway = attacked["gateway"]
    answer, _seconds = _post(
        gateway, "/predict/batch", json.dumps({"features": [{}] * 1000}).encode()
    )
    assert answer.status_code == 422
    assert len(answer.content) <= ANSWER_BYTES
    detail = answer.json()["detail"]
    assert len(detail) == MAX_PROBLEMS + 1
    assert all(field.startswith("features.") for field in _fields(answer)[:MAX_PROBLEMS])
    assert {(p["field"].split(".")[1], p["type"]) for p in detail[:MAX_PROBLEMS]} <= {
        ("0", "missing"),
        ("1", "missing"),
    }
    stopped = detail[-1]
    assert stopped["type"] == "too_many_errors"
    assert "were not checked" in stopped["message"]


def test_one_bad_record_among_valid_ones_is_named_by_its_place(
    attacked: dict[str, LocalProcess],
) -> None:
    """A batch whose record 7 has an hour of 99 and record 9 no district: both named, exactly."""
    gateway = attacked["gateway"]
    records: list[dict[str, Any]] = [dict(EXAMPLE) for _ in range(10)]
    records[7]["hora"] = 99
    del records[9]["district"]
    answer, _seconds = _post(gateway, "/predict/batch", json.dumps({"features": records}).encode())
    assert answer.status_code == 422
    assert _fields(answer) == ["features.7.hora", "features.9.district"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"features": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"features": {"iucr": "' + b"9" * 1_500_000 + b'"}}',
        json.dumps({"features": {**EXAMPLE, **{f"extra{i}": i for i in range(50_000)}}}).encode(),
    ],
    ids=["nested-100000-deep", "a-1.5-MB-value", "50000-unknown-fields"],
)
@pytest.mark.parametrize("path", ["/predict", "/v2/predict", "/predict/batch"])
def test_a_deep_or_long_single_value_is_a_short_422(
    attacked: dict[str, LocalProcess], body: bytes, path: str
) -> None:
    """Attack: one record whose value is nested 100,000 deep, 1.5 MB long, or 50,000 keys wide."""
    gateway = attacked["gateway"]
    if path == "/predict/batch":
        body = body.replace(b'{"features": ', b'{"features": [', 1)[:-1] + b"]}"
    answer, _seconds = _post(gateway, path, body)
    assert answer.status_code == 422, answer.text[:500]
    assert len(answer.content) <= ANSWER_BYTES
    assert answer.json()["detail"]
    assert httpx.post(gateway.url + "/predict", json={"features": EXAMPLE}).status_code == 200
