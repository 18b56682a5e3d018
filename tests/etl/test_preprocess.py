from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from crimes import contract
from crimes.contract import SchemaError
from crimes.etl.preprocess import parse_timestamps, preprocess
from tests.support.records import API_RECORD, CSV_RECORD, record


def run(*records: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, int]]:
    features, report = preprocess(pd.DataFrame(list(records)))
    assert report.rows_in == len(records)
    assert report.rows_out + report.rows_dropped == report.rows_in
    return features, report.dropped


def test_both_export_formats_give_the_same_features() -> None:
    from_csv, _ = run(CSV_RECORD)
    from_api, _ = run(API_RECORD)
    # The JSON API's text form (what the extract stores) too: booleans and location as text.
    api_text = {**API_RECORD, "arrest": "false", "domestic": "true",
                "location": json.dumps(API_RECORD["location"], sort_keys=True)}  # fmt: skip
    from_api_text, _ = run(api_text)
    pd.testing.assert_frame_equal(from_csv, from_api)
    pd.testing.assert_frame_equal(from_csv, from_api_text)
    row = from_csv.iloc[0]
    assert list(from_csv.columns) == [*contract.FEATURES, contract.TARGET]
    # 2024-12-31 was a Tuesday: Monday=0 makes it 1.
    assert (row.mes, row.dia_mes, row.dia_semana, row.hora) == (12, 31, 1, 23)
    assert (row.beat, row.district, row.ward, row.community_area) == (332, 3, 5, 43)
    assert row.iucr == "0460"
    assert row.fbi_code == "08B"
    assert row.arrest is np.False_ or row.arrest is False
    assert bool(row.domestic) is True
    assert row.latitude == pytest.approx(41.771470188)


@pytest.mark.parametrize(
    ("date", "hour", "weekday"),
    [
        ("01/01/2024 12:00:00 AM", 0, 0),
        ("01/01/2024 12:30:00 PM", 12, 0),
        ("2024-01-07T01:05:00.000", 1, 6),
        ("2024-01-07T01:05:00", 1, 6),
    ],
)
def test_dates_in_either_format(date: str, hour: int, weekday: int) -> None:
    features, _ = run(record(date=date))
    assert (features.hora[0], features.dia_semana[0]) == (hour, weekday)


def test_location_fills_missing_coordinates_in_every_format() -> None:
    rows = [
        record(id="1", latitude=None, longitude=None, location="POINT (-87.5 41.75)"),
        record(id="2", latitude=None, longitude=None, location="(41.75, -87.5)"),
        record(
            id="3",
            latitude=None,
            longitude=None,
            location='{"latitude": "41.75", "longitude": "-87.5"}',
        ),
        record(id="4", latitude=None, longitude=None, location=None),
    ]
    features, dropped = run(*rows)
    assert dropped == {}
    assert features.latitude[:3].tolist() == [41.75] * 3
    assert features.longitude[:3].tolist() == [-87.5] * 3
    assert np.isnan(features.latitude[3])  # kept: the transformation imputes the median


def test_true_duplicates_keep_the_latest_update() -> None:
    old = record(id="7", updated_on="01/09/2024 10:00:00 AM", arrest="false")
    new = record(id="7", updated_on="05/18/2026 10:00:00 AM", arrest="true")
    for order in ((old, new), (new, old)):
        features, dropped = run(*order)
        assert dropped == {"duplicate": 1}
        assert len(features) == 1
        assert bool(features.arrest[0]) is True


def test_output_is_sorted_by_record_id_whatever_the_input_order() -> None:
    rows = [record(id=str(i), ward=str(i)) for i in (30, 4, 12)]
    features, _ = run(*rows)
    assert features.ward.tolist() == [4, 12, 30]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"fbi_code": None}, "missing_target"),
        ({"fbi_code": "  "}, "missing_target"),
        ({"date": "31/12/2024 25:00"}, "bad_date"),
        ({"date": None}, "bad_date"),
        ({"arrest": "maybe"}, "bad_arrest"),
        ({"beat": "abc"}, "bad_beat"),
        ({"ward": "4.5"}, "bad_ward"),
        ({"community_area": None}, "missing_community_area"),
        ({"latitude": "north"}, "bad_latitude"),
        ({"ward": "120"}, "out_of_range_ward"),
        ({"beat": "0"}, "out_of_range_beat"),
        ({"iucr": "460"}, "out_of_range_iucr"),
        ({"latitude": "91"}, "out_of_range_latitude"),
        ({"id": None}, "missing_id"),
        ({"description": None}, "out_of_range_description"),
    ],
)
def test_unusable_rows_are_counted_and_dropped(changes: dict[str, Any], reason: str) -> None:
    bad = record(id="2", **{k: v for k, v in changes.items() if v is not None})
    for key, value in changes.items():
        if value is None:
            bad.pop(key, None)
    features, dropped = run(record(id="1"), bad)
    assert dropped == {reason: 1}
    assert len(features) == 1


def test_missing_location_description_becomes_its_own_category() -> None:
    features, dropped = run(record(location_description=""))
    assert dropped == {}
    assert features.location_description[0] == contract.MISSING_LOCATION_DESCRIPTION


def test_codes_keep_their_leading_zeros_as_text_and_become_integers_as_numbers() -> None:
    features, _ = run(record(iucr="0110", beat="0111", district="001", fbi_code="01A"))
    row = features.iloc[0]
    assert (row.iucr, row.beat, row.district, row.fbi_code) == ("0110", 111, 1, "01A")


def test_missing_required_columns_is_a_clear_schema_error() -> None:
    frame = pd.DataFrame([record()]).drop(columns=["beat", "fbi_code"])
    with pytest.raises(SchemaError, match="beat, fbi_code"):
        preprocess(frame)


def test_garbage_rows_never_crash() -> None:
    garbage = pd.DataFrame(
        {column: ["", "???", "\x00", "1e400", "nan", None] for column in CSV_RECORD}
    )
    features, report = preprocess(garbage)
    assert report.rows_out == 0
    assert report.rows_dropped == 6
    assert list(features.columns) == [*contract.FEATURES, contract.TARGET]


def test_unparseable_timestamps_are_nat() -> None:
    parsed = parse_timestamps(pd.Series(["12/31/2024 11:58:00 PM", "not a date", None]))
    assert parsed.isna().tolist() == [False, True, True]


def test_records_without_any_location_columns() -> None:
    rows = [record(id=str(i), latitude=None, longitude=None, location=None) for i in range(3)]
    features, dropped = run(*rows)
    assert dropped == {}
    assert features.latitude.isna().all()


def test_text_in_any_case_and_padding_gives_the_canonical_features() -> None:
    canonical, _ = preprocess(pd.DataFrame([record()]))
    careless = record(
        iucr=f" {CSV_RECORD['iucr']} ",
        primary_type=str(CSV_RECORD["primary_type"]).lower(),
        description=f"\t{str(CSV_RECORD['description']).title()}",
        location_description=f"{str(CSV_RECORD['location_description']).lower()}  ",
    )
    features, _ = preprocess(pd.DataFrame([careless]))
    pd.testing.assert_frame_equal(features, canonical)
    blank, _ = preprocess(pd.DataFrame([record(location_description="   ")]))
    assert blank.loc[0, "location_description"] == contract.MISSING_LOCATION_DESCRIPTION
