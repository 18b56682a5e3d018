"""The published data sets read back: the manifest a year's pointer names, its data_info, and
the whole training set verified against it (paths in `layout`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd

from crimes.lake import layout, storage
from crimes.lake.storage import Lake
from crimes.transformation import document
from crimes.transformation.document import TransformationDocument

FINAL_FILES: Final = (
    "X_train",
    "X_test",
    "y_train",
    "y_test",
    "features_train",
    "features_test",
)


@dataclass(frozen=True)
class FinalData:
    """The published training set of one year, verified against its manifest."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    features_train: pd.DataFrame
    features_test: pd.DataFrame
    transformation: TransformationDocument
    data_info: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def transformation_version(self) -> str:
        return str(self.manifest["transformation_version"])


def current_manifest(lake: Lake, year: int) -> dict[str, Any]:
    return storage.read_pointer(lake, layout.pointer_key(year))


def load_data_info(lake: Lake, year: int) -> dict[str, Any]:
    manifest = current_manifest(lake, year)
    info = storage.read_file(lake, manifest["files"]["data_info"]["data_info.json"])

    value = json.loads(info)
    assert isinstance(value, dict)
    return value


def load_final(lake: Lake, year: int) -> FinalData:
    manifest = current_manifest(lake, year)
    final = manifest["files"]["final"]
    frames = {
        name: storage.read_parquet_bytes(storage.read_file(lake, final[f"{name}.parquet"]))
        for name in FINAL_FILES
    }
    info_files = manifest["files"]["data_info"]
    try:
        transformation = document.loads(
            storage.read_file(lake, info_files[document.FILE_NAME]),
            expected_version=str(manifest["transformation_version"]),
        )
    except document.DocumentError as error:
        raise storage.LakeError(f"the published transformation: {error}") from error

    return FinalData(
        X_train=frames["X_train"],
        X_test=frames["X_test"],
        y_train=frames["y_train"].iloc[:, 0],
        y_test=frames["y_test"].iloc[:, 0],
        features_train=frames["features_train"],
        features_test=frames["features_test"],
        transformation=transformation,
        data_info=json.loads(storage.read_file(lake, info_files["data_info.json"])),
        manifest=manifest,
    )
