from __future__ import annotations

import itertools
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from crimes import contract
from tests.support.records import REFERENCE_EXAMPLE


def test_the_sixteen_reference_features_with_their_encodings() -> None:
    assert set(contract.FEATURES) == set(REFERENCE_EXAMPLE)
    assert len(contract.FEATURES) == 16
    assert contract.NUMERIC_FEATURES == ("latitude", "longitude")
    assert set(contract.ONEHOT_FEATURES) == {"arrest", "domestic", "dia_semana"}
    assert set(contract.TARGET_ENCODED_FEATURES) == {
        "iucr", "primary_type", "description", "location_description", "beat", "district",
        "ward", "community_area", "mes", "dia_mes", "hora",
    }  # fmt: skip
    assert contract.TARGET == "fbi_code"


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("beat", 1, 9999),
        ("district", 1, 999),
        ("ward", 1, 99),
        ("community_area", 1, 99),
        ("latitude", -90, 90),
        ("longitude", -180, 180),
        ("mes", 1, 12),
        ("dia_mes", 1, 31),
        ("dia_semana", 0, 6),
        ("hora", 0, 23),
    ],
)
def test_ranges_are_the_references(name: str, low: float, high: float) -> None:
    spec = contract.SPEC_BY_NAME[name]
    assert (spec.minimum, spec.maximum) == (low, high)
    contract.CrimeFeatures(**{**REFERENCE_EXAMPLE, name: low})
    contract.CrimeFeatures(**{**REFERENCE_EXAMPLE, name: high})
    for bad in (low - 1, high + 1):
        with pytest.raises(ValidationError, match=name):
            contract.CrimeFeatures(**{**REFERENCE_EXAMPLE, name: bad})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"iucr": "930"}, "iucr"),
        ({"iucr": "09300"}, "iucr"),
        ({"arrest": "yes"}, "arrest"),
        ({"domestic": 1}, "domestic"),
        ({"beat": "abc"}, "beat"),
        ({"primary_type": ""}, "primary_type"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_records_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        contract.CrimeFeatures(**{**REFERENCE_EXAMPLE, **change})
    assert field in str(error.value)


def test_missing_field_is_named() -> None:
    example = {k: v for k, v in REFERENCE_EXAMPLE.items() if k != "hora"}
    with pytest.raises(ValidationError, match="hora"):
        contract.CrimeFeatures(**example)


def test_nullable_features() -> None:
    record = contract.CrimeFeatures(
        **{**REFERENCE_EXAMPLE, "latitude": None, "longitude": None, "location_description": None}
    )
    frame = contract.features_frame([record])
    assert frame["latitude"].isna().iloc[0]
    assert frame.loc[0, "location_description"] == contract.MISSING_LOCATION_DESCRIPTION
    assert list(frame.columns) == list(contract.FEATURES)
    assert dict(frame.dtypes.astype(str)) == dict(contract.FEATURE_DTYPES)


def test_frame_check_agrees_with_the_schema_row_by_row() -> None:
    """The ETL's vectorised check and the API's schema must accept exactly the same rows."""
    probes: dict[str, list[Any]] = {
        "beat": [0, 1, 9999, 10000],
        "ward": [0, 99, 100],
        "latitude": [-90.5, 41.7, 90.0, None, float("inf")],
        "iucr": ["0460", "460", "04600"],
        "hora": [-1, 0, 23, 24],
        "description": [
            "SIMPLE",
            "X" * contract.MAX_TEXT_LENGTH,
            "X" * (contract.MAX_TEXT_LENGTH + 1),
        ],
    }
    rows = []
    for values in itertools.product(*probes.values()):
        rows.append({**REFERENCE_EXAMPLE, **dict(zip(probes, values, strict=True))})
    frame = pd.DataFrame(rows)
    verdicts = contract.out_of_contract(frame)
    for row, verdict in zip(rows, verdicts, strict=True):
        try:
            contract.CrimeFeatures(**row)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == (verdict is None), (row, verdict)


def test_column_check_agrees_with_the_schema_row_by_row() -> None:
    """The raw-record check (column-wise, one record or many) accepts exactly what the schema
    accepts, and names the feature and row of the first value it refuses."""
    probes: dict[str, list[Any]] = {
        "beat": [0, 1, 9999, 10000],
        "latitude": [-90.5, 41.7, 90.0, None, float("inf"), float("-inf")],
        "iucr": ["0460", " 460", "04600", "   "],
        "location_description": ["street", "  ", None, "y" * (contract.MAX_TEXT_LENGTH + 1)],
        "hora": [-1, 0, 23, 24],
    }
    rows = [
        {**REFERENCE_EXAMPLE, **dict(zip(probes, values, strict=True))}
        for values in itertools.product(*probes.values())
    ]

    def columns(batch: list[dict[str, Any]]) -> dict[str, list[Any]]:
        return {
            name: [float("nan") if r[name] is None and name == "latitude" else r[name]
                   for r in batch]
            for name in contract.FEATURES
        }  # fmt: skip

    accepted_rows = []
    for row in rows:
        try:
            expected = contract.CrimeFeatures(**row).model_dump()
        except ValidationError as error:
            problem = str(error)
            with pytest.raises(contract.ContractViolation) as refused:
                contract.validate_columns(columns([row]), 1)
            assert refused.value.feature in problem, (row, refused.value)
            continue
        checked = contract.validate_columns(columns([row]), 1)
        assert {name: values[0] for name, values in checked.items()} == expected
        accepted_rows.append(row)
    # Many records at once: the first refused row is named.
    half = len(accepted_rows) // 2
    assert half > 5
    batch = [*accepted_rows[:half], {**REFERENCE_EXAMPLE, "hora": 24}, *accepted_rows[half:]]
    with pytest.raises(contract.ContractViolation, match=f"input 'hora' row {half}: 24"):
        contract.validate_columns(columns(batch), len(batch))
    assert len(contract.validate_columns(columns(accepted_rows), len(accepted_rows))["iucr"]) == (
        len(accepted_rows)
    )


def test_text_is_normalised_the_same_way_wherever_a_record_comes_from() -> None:
    assert contract.normalise_text("  motor vehicle theft ") == "MOTOR VEHICLE THEFT"
    assert contract.normalise_text(" \t\n") is None
    assert contract.normalise_text(5) == 5  # not text: left for validation to refuse
    variant = contract.CrimeFeatures(
        **{
            **REFERENCE_EXAMPLE,
            "iucr": " 0930",
            "primary_type": "motor vehicle theft ",
            "description": "Theft / Recovery - Automobile",
            "location_description": "\tstreet",
        }
    )
    assert variant == contract.CrimeFeatures(**REFERENCE_EXAMPLE)
    blank = contract.CrimeFeatures(**{**REFERENCE_EXAMPLE, "location_description": "   "})
    assert blank.location_description is None  # not recorded, as null is
    with pytest.raises(ValidationError, match="only whitespace"):
        contract.CrimeFeatures(**{**REFERENCE_EXAMPLE, "primary_type": "  "})
    # The ETL's column-wise twin gives the same values.
    values = ["  street ", "Street", "", "   ", None, "ÁLLEY ", "a\u00a0"]
    column = contract.normalise_text_column(pd.Series(values, dtype="object"))
    assert column.tolist() == [contract.normalise_text(v) for v in values]
