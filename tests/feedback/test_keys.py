"""Record keys as requests carry them: optional, validated like the features, never features,
and one normalisation for the gateway and the evaluation (both portal export formats)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError

from crimes import contract
from crimes.feedback.keys import RecordKey, normalise_case_number, normalise_record_id
from crimes.gateway.bodies import read_batch

EXAMPLE = dict(contract.EXAMPLE_RECORD)


def body(**envelope: Any) -> bytes:
    return json.dumps({"features": [EXAMPLE, EXAMPLE], **envelope}).encode()


def problems(data: bytes) -> list[dict[str, Any]]:
    with pytest.raises(RequestValidationError) as refused:
        read_batch(data, 100)
    return list(refused.value.errors())


@pytest.mark.parametrize(
    ("given", "expected"), [(13311263, "13311263"), ("13311263", "13311263"), (" 007 ", "7")]
)
def test_an_id_is_the_same_from_either_export_format(given: Any, expected: str) -> None:
    assert normalise_record_id(given) == expected


@pytest.mark.parametrize("given", [True, 1.5, "12a", "-3", "1" * 13, "\uff11\uff12"])
def test_an_id_that_is_no_id_is_refused(given: Any) -> None:
    with pytest.raises(ValueError, match="record id"):
        normalise_record_id(given)


def test_a_case_number_is_upper_case_and_checked() -> None:
    assert normalise_case_number(" jh159934 ") == "JH159934"
    assert normalise_case_number("") is None
    for bad in ("JH 159", "x" * 17, 5, "-JH"):
        with pytest.raises(ValueError, match="case number"):
            normalise_case_number(bad)


def test_a_batch_carries_one_key_per_record_normalised() -> None:
    batch = read_batch(
        body(keys=[{"id": 13311263, "case_number": "jh159934"}, {"case_number": "JH1"}]), 100
    )
    assert batch.count == 2
    assert batch.keys is not None
    assert batch.keys.ids == ["13311263", None]
    assert batch.keys.case_numbers == ["JH159934", "JH1"]
    assert read_batch(body(), 100).keys is None
    assert read_batch(body(keys=None), 100).keys is None


def test_keys_that_do_not_match_the_records_are_named() -> None:
    (problem,) = problems(body(keys=[{"id": 1}]))
    assert problem["loc"] == ("body", "keys")
    assert "2 records, 1 keys" in problem["msg"]
    found = problems(body(keys=[{"id": 1}, {"id": "x1"}]))
    assert [p["loc"] for p in found] == [("body", "keys", 1, "id")]
    found = problems(body(keys=[{"id": 1}, {}]))
    assert found[0]["loc"] == ("body", "keys", 1)
    found = problems(body(keys=[{"id": 1}, {"id": 2, "district": 5}]))
    assert found[0]["loc"] == ("body", "keys", 1, "district")
    assert problems(body(keys="no"))[0]["loc"][:2] == ("body", "keys")
    assert problems(body(key=[{"id": 1}]))[0]["loc"] == ("body", "key")


def test_a_single_record_may_carry_its_key() -> None:
    assert RecordKey.model_validate({"id": "5"}).record_id == "5"
    with pytest.raises(ValueError, match="needs its id"):
        RecordKey.model_validate({"id": None, "case_number": " "})
