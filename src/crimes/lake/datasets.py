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

    def raw_splits(self) -> HeldOutRows:
        """Its raw splits, already in memory (no second read of the lake)."""
        return HeldOutRows(
            dataset=str(self.manifest["dataset"]),
            features_train=self.features_train,
            y_train=self.y_train,
            features_test=self.features_test,
            y_test=self.y_test,
        )


def current_manifest(lake: Lake, year: int) -> dict[str, Any]:
    return storage.read_pointer(lake, layout.pointer_key(year))


def dataset_manifest(lake: Lake, year: int, dataset: str | None = None) -> dict[str, Any]:
    """The manifest of one published dataset (the year's current one when none is named)."""
    if dataset is None:
        return current_manifest(lake, year)
    key = layout.dataset_manifest_key(year, dataset)
    if not lake.exists(key):
        raise storage.LakeError(
            f"dataset {dataset} of {year} was never published ({lake.url(key)})"
        )
    manifest = lake.read_json(key)
    if not isinstance(manifest, dict) or manifest.get("dataset") != dataset:
        raise storage.LakeError(f"{lake.url(key)} is not the manifest of dataset {dataset}")
    return manifest


@dataclass(frozen=True)
class HeldOutRows:
    """A dataset's raw splits (contract features and targets), without the transformed ones."""

    dataset: str
    features_train: pd.DataFrame
    y_train: pd.Series
    features_test: pd.DataFrame
    y_test: pd.Series


def load_transformation(lake: Lake, manifest: dict[str, Any]) -> TransformationDocument:
    """A dataset's transformation document, checked against the version its manifest names."""
    entry = manifest["files"]["data_info"][document.FILE_NAME]
    try:
        return document.loads(
            storage.read_file(lake, entry), expected_version=str(manifest["transformation_version"])
        )
    except document.DocumentError as error:
        raise storage.LakeError(f"the published transformation: {error}") from error


def load_raw_splits(lake: Lake, manifest: dict[str, Any]) -> HeldOutRows:
    final = manifest["files"]["final"]

    def frame(name: str) -> pd.DataFrame:
        return storage.read_parquet_bytes(storage.read_file(lake, final[f"{name}.parquet"]))

    return HeldOutRows(
        dataset=str(manifest["dataset"]),
        features_train=frame("features_train"),
        y_train=frame("y_train").iloc[:, 0],
        features_test=frame("features_test"),
        y_test=frame("y_test").iloc[:, 0],
    )


def load_data_info(lake: Lake, year: int) -> dict[str, Any]:
    manifest = current_manifest(lake, year)
    info = storage.read_file(lake, manifest["files"]["data_info"]["data_info.json"])

    value = json.loads(info)
    assert isinstance(value, dict)
    return value


def load_final(lake: Lake, year: int, dataset: str | None = None) -> FinalData:
    """A published dataset, every file verified (the year's current one when none is named)."""
    manifest = dataset_manifest(lake, year, dataset)
    final = manifest["files"]["final"]
    frames = {
        name: storage.read_parquet_bytes(storage.read_file(lake, final[f"{name}.parquet"]))
        for name in FINAL_FILES
    }
    info_files = manifest["files"]["data_info"]
    return FinalData(
        X_train=frames["X_train"],
        X_test=frames["X_test"],
        y_train=frames["y_train"].iloc[:, 0],
        y_test=frames["y_test"].iloc[:, 0],
        features_train=frames["features_train"],
        features_test=frames["features_test"],
        transformation=load_transformation(lake, manifest),
        data_info=json.loads(storage.read_file(lake, info_files["data_info.json"])),
        manifest=manifest,
    )
