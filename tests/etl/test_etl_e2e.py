"""The ETL end to end on real services: Airflow (metadata in PostgreSQL) runs the DAG against
the portal double serving real rows, writing to SeaweedFS' S3 API and logging to MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from crimes import contract
from crimes.etl import pipeline
from crimes.etl.extract import ExtractError
from crimes.etl.settings import EtlSettings
from crimes.lake import datasets, layout, storage
from crimes.lake.storage import Lake
from crimes.local.portal_double import Fault, PortalDouble
from crimes.settings import TrackingSettings
from crimes.transformation import document
from crimes.transformation.lookup import LookupTransformer
from tests.support.stack import ROWS, YEAR

pytestmark = pytest.mark.e2e


def test_every_artifact_reads_back_from_the_object_store(
    published: dict[str, Any], stack_env: dict[str, str]
) -> None:
    lake = Lake()
    assert lake.root == "s3://data"
    keys = [entry["key"] for group in published["files"].values() for entry in group.values()]
    for group in published["files"].values():
        for entry in group.values():
            assert storage.sha256(storage.read_file(lake, entry)) == entry["sha256"]
    # Really in SeaweedFS, under the year's paths, seen by a plain S3 client.
    s3 = boto3.client(
        "s3",
        endpoint_url=stack_env["CRIMES_LAKE_S3_ENDPOINT_URL"],
        aws_access_key_id=stack_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack_env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    listed = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="data")
        for o in page.get("Contents", [])
    }
    assert set(keys) | {layout.pointer_key(YEAR)} <= listed
    assert all(f"/{YEAR}/" in key for key in keys)
    assert any(k.startswith(f"chicago/crimes/{YEAR}/raw/") for k in keys)
    assert any(k.startswith(f"chicago/crimes/{YEAR}/final/") for k in keys)
    assert any(k.startswith("chicago/crimes/data_info/") for k in keys)


def test_raw_rows_are_the_portals_text(published: dict[str, Any]) -> None:
    lake = Lake()
    raw = storage.read_parquet_bytes(
        storage.read_file(lake, published["files"]["raw"]["crimes.parquet"])
    )
    assert len(raw) == ROWS == published["rows"]["raw"]
    assert raw["date"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d").all()
    assert raw["beat"].str.len().eq(4).all()
    assert set(raw["arrest"]) <= {"true", "false"}


def test_final_splits_are_consistent_and_reproducible(published: dict[str, Any]) -> None:
    final = datasets.load_final(Lake(), YEAR)
    rows = published["rows"]
    assert len(final.X_train) == len(final.y_train) == len(final.features_train) == rows["train"]
    assert len(final.X_test) == len(final.y_test) == len(final.features_test) == rows["test"]
    assert rows["train"] + rows["test"] == rows["preprocessed"]
    assert abs(rows["test"] / rows["preprocessed"] - 0.3) < 0.01
    assert list(final.features_test.columns) == list(contract.FEATURES)
    # Serving equals training: the published document reproduces X_test exactly.
    lookup = LookupTransformer(final.transformation)
    again, _ = lookup.transform(final.features_test.to_dict("records"))
    assert np.array_equal(again, final.X_test.to_numpy())
    assert lookup.output_columns == list(final.X_test.columns)
    assert final.transformation_version == final.transformation.version


def test_data_info_describes_the_set(published: dict[str, Any]) -> None:
    info = datasets.load_data_info(Lake(), YEAR)
    assert info["columns"] == list(contract.FEATURES)
    assert info["categorical_columns"] == list(contract.CATEGORICAL_FEATURES)
    assert info["target"]["column"] == "fbi_code"
    assert info["target"]["classes"] == published["classes"]
    assert sum(info["target"]["counts"].values()) == published["rows"]["preprocessed"]
    assert info["rows"]["raw"] == ROWS
    assert info["transformation"]["version"] == published["transformation_version"]
    assert "0460" in info["categories"]["iucr"]
    assert set(info["categories"]["dia_semana"]) == set(range(7))


def test_the_etl_run_is_in_mlflow(published: dict[str, Any], tmp_path: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(TrackingSettings().tracking_uri)
    run = client.get_run(published["etl_run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "Chicago Crimes 2024"
    assert run.info.status == "FINISHED"
    assert run.data.metrics["rows_raw"] == ROWS
    assert run.data.metrics["rows_train"] == published["rows"]["train"]
    assert run.data.metrics["rows_dropped"] == ROWS - published["rows"]["preprocessed"]
    assert run.data.params["transformation_version"] == published["transformation_version"]
    assert run.data.tags["airflow_run_id"]
    assert run.inputs is not None
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == [f"chicago_crimes_{YEAR}"]
    path = client.download_artifacts(
        run.info.run_id, "data_info/transformation.json", str(tmp_path)
    )
    logged = document.loads(Path(path).read_bytes(), published["transformation_version"])
    assert logged.data == datasets.load_final(Lake(), YEAR).transformation.data
    manifest = json.loads(
        Path(client.download_artifacts(run.info.run_id, "manifest.json", str(tmp_path))).read_text()
    )
    assert manifest["dataset"] == published["dataset"]


def test_a_rerun_on_the_same_input_is_idempotent(
    published: dict[str, Any], stack_portal: PortalDouble
) -> None:
    again = pipeline.run_etl(EtlSettings(source=stack_portal.url, year=YEAR), Lake())
    assert again["dataset"] == published["dataset"]
    assert again["content_hash"] == published["content_hash"]
    assert again["transformation_version"] == published["transformation_version"]
    assert again["files"] == published["files"]
    assert again["etl_run_id"] != published["etl_run_id"]


def _published_bytes(lake: Lake) -> tuple[bytes, bytes]:
    manifest = datasets.current_manifest(lake, YEAR)
    info = storage.read_file(lake, manifest["files"]["data_info"]["data_info.json"])
    return lake.read_bytes(layout.pointer_key(YEAR)), info


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault.http(503, from_offset=4_000, times=None), "4000"),
        (Fault.truncated(from_offset=2_000, times=None), "2000"),
    ],
    ids=["server-errors-mid-download", "connection-cut-mid-body"],
)
def test_a_source_failing_mid_download_publishes_nothing(
    published: dict[str, Any], real_data: Path, fault: Fault, message: str
) -> None:
    lake = Lake()
    before = _published_bytes(lake)
    with PortalDouble(real_data, rows=10_000, faults=[fault]) as failing:
        settings = EtlSettings(
            source=failing.url, year=YEAR, page_size=2_000, max_attempts=2, backoff_seconds=0
        )
        with pytest.raises(ExtractError, match=message):
            pipeline.run_etl(settings, lake)
    assert _published_bytes(lake) == before


def test_malformed_rows_never_corrupt_what_was_published(
    published: dict[str, Any], tmp_path: Path
) -> None:
    lake = Lake()
    before = _published_bytes(lake)
    garbage = tmp_path / "garbage.json"
    garbage.write_text(
        json.dumps(
            [
                {
                    "id": str(i),
                    "date": "yesterday",
                    "iucr": 12,
                    "beat": "x",
                    "fbi_code": None,
                    "arrest": "perhaps",
                    "domestic": None,
                    "primary_type": "",
                    "description": "",
                    "district": "-1",
                    "ward": "1000",
                    "community_area": "?",
                }
                for i in range(500)
            ]
        )
    )
    with pytest.raises(pipeline.EtlError, match="only 0 usable rows of 500"):
        pipeline.run_etl(EtlSettings(source=str(garbage), year=YEAR, source_folder=tmp_path), lake)
    missing_columns = tmp_path / "missing.json"
    missing_columns.write_text(json.dumps([{"id": "1", "date": "2024-01-01T00:00:00.000"}]))
    with pytest.raises(ValueError, match="not Chicago crime records: missing the columns"):
        pipeline.run_etl(
            EtlSettings(source=str(missing_columns), year=YEAR, source_folder=tmp_path), lake
        )
    assert _published_bytes(lake) == before
