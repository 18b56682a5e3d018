"""The batch route's path (`bodies.batch_records`: each record's types by msgspec, else by
pydantic's laxer ones; the contract's rules column-wise) accepts exactly the bodies
`BatchRequest` accepts, and gives exactly `model_dump`'s values: a fast path, never a second
contract."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from crimes import contract
from crimes.gateway.bodies import batch_records
from crimes.gateway.schemas import EXAMPLE, BatchRequest

CANDIDATES: list[Any] = [
    None, True, False, 0, 1, -1, 4, 7, 12, 24, 31, 99, 100, 999, 1000, 9999, 10000, 10**20,
    0.0, 0.5, 1.0, 4.0, 41.7, -87.6, 90.0, 90.0001, -180.0, 180.5, 1e400, -1e400,
    "", "x", "0930", "930", "09301", "1", "4", "4.0", "true", "false", "STREET", "THEFT",
    "éééé", " 412", " 0930 ", "street ", "   ", "\t", [], [1], {}, {"a": 1},
]  # fmt: skip


def both(body: bytes) -> tuple[Any, Any]:
    """What BatchRequest gives, and what the batch path gives (they must agree)."""
    try:
        expected: Any = BatchRequest.model_validate_json(body).model_dump()["features"]
    except ValidationError:
        expected = None
    got: Any = None
    batch = batch_records(body)
    if batch is not None:
        columns, count = batch.columns, batch.count
        assert all(len(values) == count for values in columns.values())
        got = [{name: columns[name][i] for name in contract.FEATURES} for i in range(count)]
    return expected, got


def same(expected: Any, got: Any) -> bool:
    if (expected is None) != (got is None):
        return False
    if expected is None:
        return True
    # Equal values of equal types (1 is not 1.0 is not True), NaN-free by the constraints.
    return json.dumps(expected, sort_keys=True) == json.dumps(got, sort_keys=True) and all(
        type(a[k]) is type(b[k]) for a, b in zip(expected, got, strict=True) for k in a
    )


def test_one_field_changed_removed_or_added() -> None:
    bodies = [{"features": [EXAMPLE]}, {"features": []}, {"features": EXAMPLE}, {}, []]
    for name in [*contract.FEATURES, "extra"]:
        bodies.append({"features": [{k: v for k, v in EXAMPLE.items() if k != name}]})
        for value in CANDIDATES:
            bodies.append({"features": [EXAMPLE, {**EXAMPLE, name: value}]})
    bodies.append({"features": [EXAMPLE], "extra": 1})
    accepted = 0
    for body in bodies:
        raw = json.dumps(body).encode()
        expected, got = both(raw)
        assert same(expected, got), (body, expected, got)
        accepted += expected is not None
    assert accepted > 100  # both sides of the boundary are exercised


scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.sampled_from(CANDIDATES),
)
records = st.dictionaries(st.sampled_from([*contract.FEATURES, "extra"]), scalar, max_size=3).map(
    lambda changes: {**EXAMPLE, **changes}
)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(records, max_size=3), st.lists(st.sampled_from(contract.FEATURES), max_size=2))
def test_random_bodies(rows: list[dict[str, Any]], dropped: list[str]) -> None:
    body = {"features": [{k: v for k, v in row.items() if k not in dropped} for row in rows]}
    expected, got = both(json.dumps(body).encode())
    assert same(expected, got), (body, expected, got)


def test_a_typical_batch_takes_the_msgspec_path_alone(monkeypatch: Any) -> None:
    """Records as clients send them (JSON ints, floats, bools, text) never need pydantic."""
    from crimes.gateway import bodies

    def unused(raw: Any) -> None:
        raise AssertionError("the pydantic path was taken")

    monkeypatch.setattr(bodies, "_lax_record", unused)
    rows = [EXAMPLE, {**EXAMPLE, "latitude": None, "location_description": " street "}]
    batch = batch_records(json.dumps({"features": rows}).encode())
    assert batch is not None
    columns, count = batch.columns, batch.count
    assert count == 2
    assert columns["location_description"] == ["STREET", "STREET"]
    assert columns["latitude"] == [EXAMPLE["latitude"], None]
    # A key given twice counts once, as in the models (its last value).
    twice = b'{"features": [' + json.dumps(EXAMPLE).encode()[:-1] + b', "beat": 413}]}'
    assert both(twice)[0] is not None
    same_twice = both(twice)
    assert same(*same_twice)
