"""Data checks on the real Chicago crimes 2024 file, in both of the portal's export formats."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from crimes import contract
from crimes.etl.extract import read_file
from crimes.etl.preprocess import preprocess
from crimes.local.portal_double import load_portal_csv, to_api_json

ROWS = 20_000


@pytest.fixture(scope="module")
def full(real_data: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    features, report = preprocess(read_file(str(real_data)).frame)
    return features, report.dropped


def test_the_csv_export_and_the_json_api_give_identical_features(
    real_data: Path, tmp_path: Path
) -> None:
    csv_rows = load_portal_csv(real_data, rows=ROWS)
    api_file = tmp_path / "api.json"
    api_file.write_text("[" + ",".join(to_api_json(csv_rows)) + "]")
    from_api = read_file(str(api_file)).frame
    assert from_api["date"].str.contains("T").all()  # really the API's format
    assert json.loads(from_api["location"].dropna().iloc[0])["latitude"]
    csv_features, csv_report = preprocess(csv_rows)
    api_features, api_report = preprocess(from_api)
    assert csv_report.dropped == api_report.dropped
    pd.testing.assert_frame_equal(csv_features, api_features, check_exact=True)


def test_the_whole_year_fits_the_contract(full: tuple[pd.DataFrame, dict[str, int]]) -> None:
    features, dropped = full
    # 259,129 rows in the file (its README); 7 have no community area.
    assert len(features) + sum(dropped.values()) == 259_129
    assert dropped == {"missing_community_area": 7}
    assert features[contract.TARGET].nunique() == 26
    assert contract.out_of_contract(features[list(contract.FEATURES)]).isna().all()
    assert features.latitude.isna().sum() == 1_598  # kept, imputed by the transformation
    assert (features.location_description == contract.MISSING_LOCATION_DESCRIPTION).sum() == 1_140
    assert set(features.dia_semana) == set(range(7))
    assert set(features.hora) == set(range(24))


def test_codes_keep_their_meaning(full: tuple[pd.DataFrame, dict[str, int]]) -> None:
    features, _ = full
    assert features.iucr.str.len().eq(4).all()
    assert "0460" in set(features.iucr)
    assert {"08B", "01B", "06"} <= set(features[contract.TARGET])
    assert features.beat.between(111, 2535).all()
    assert features.district.between(1, 31).all()


# The headers the portal's Export button writes (the data README: they were renamed to these).
EXPORT_HEADERS = {
    "id": "ID", "case_number": "Case Number", "date": "Date", "block": "Block", "iucr": "IUCR",
    "primary_type": "Primary Type", "description": "Description",
    "location_description": "Location Description", "arrest": "Arrest", "domestic": "Domestic",
    "beat": "Beat", "district": "District", "ward": "Ward", "community_area": "Community Area",
    "fbi_code": "FBI Code", "x_coordinate": "X Coordinate", "y_coordinate": "Y Coordinate",
    "year": "Year", "updated_on": "Updated On", "latitude": "Latitude", "longitude": "Longitude",
    "location": "Location",
}  # fmt: skip


@pytest.mark.parametrize("location_form", ["point", "pair"])
def test_the_export_buttons_csv_gives_the_same_features(
    real_data: Path, tmp_path: Path, location_form: str
) -> None:
    from crimes.etl.extract import extract
    from crimes.etl.settings import EtlSettings

    rows = load_portal_csv(real_data, rows=ROWS)
    exported = rows.rename(columns=EXPORT_HEADERS)
    assert list(exported.columns)[:3] == ["ID", "Case Number", "Date"]
    if location_form == "pair":  # the older "(lat, lon)" form of the Location column
        exported["Location"] = [
            None if lat is None else f"({lat}, {lon})"
            for lat, lon in zip(rows["latitude"], rows["longitude"], strict=True)
        ]
        exported[["Latitude", "Longitude"]] = None  # coordinates only in Location
    path = tmp_path / "Crimes_-_2024.csv"
    exported.to_csv(path, index=False)
    from_export = extract(EtlSettings(source=str(path), source_folder=tmp_path)).frame
    expected, expected_report = preprocess(rows)
    features, report = preprocess(from_export)
    assert report.dropped == expected_report.dropped
    pd.testing.assert_frame_equal(features, expected, check_exact=True)
