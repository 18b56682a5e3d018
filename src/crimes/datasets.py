"""Where the ETL's outputs live in the data lake, and how the training reads them back.

Layout under the lake root (year Y; every path carries it):
    chicago/crimes/Y/raw/<snapshot>/crimes.parquet            raw rows as text, as downloaded
    chicago/crimes/Y/preprocessed/<snapshot>/crimes.parquet   contract features + target
    chicago/crimes/Y/final/<dataset>/X_train.parquet ...      transformed splits, targets and
                                                              the untransformed rows of each split
    chicago/crimes/data_info/Y/<dataset>/data_info.json       columns, categories, counts, versions
    chicago/crimes/data_info/Y/<dataset>/transformation.joblib
    chicago/crimes/Y/CURRENT.json                             the manifest readers follow
`<snapshot>` hashes the raw rows, `<dataset>` the published content; both are content ids, so a
rerun on the same input rewrites the same paths with the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd
from sklearn.compose import ColumnTransformer

from crimes import storage, transformation
from crimes.storage import Lake

FINAL_FILES: Final = (
    "X_train",
    "X_test",
    "y_train",
    "y_test",
    "features_train",
    "features_test",
)


def year_prefix(year: int) -> str:
    return f"chicago/crimes/{year}"


def pointer_key(year: int) -> str:
    return f"{year_prefix(year)}/CURRENT.json"


def raw_prefix(year: int, snapshot: str) -> str:
    return f"{year_prefix(year)}/raw/{snapshot}"


def preprocessed_prefix(year: int, snapshot: str) -> str:
    return f"{year_prefix(year)}/preprocessed/{snapshot}"


def final_prefix(year: int, dataset: str) -> str:
    return f"{year_prefix(year)}/final/{dataset}"


def data_info_prefix(year: int, dataset: str) -> str:
    return f"chicago/crimes/data_info/{year}/{dataset}"


@dataclass(frozen=True)
class FinalData:
    """The published training set of one year, verified against its manifest."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: pd.Series
    y_test: pd.Series
    features_train: pd.DataFrame
    features_test: pd.DataFrame
    transformer: ColumnTransformer
    data_info: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def transformation_version(self) -> str:
        return str(self.manifest["transformation_version"])


def current_manifest(lake: Lake, year: int) -> dict[str, Any]:
    return storage.read_pointer(lake, pointer_key(year))


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
    transformer = transformation.loads(storage.read_file(lake, info_files["transformation.joblib"]))
    if transformation.version_id(transformer) != manifest["transformation_version"]:
        raise storage.LakeError("the published transformation does not match its version id")

    return FinalData(
        X_train=frames["X_train"],
        X_test=frames["X_test"],
        y_train=frames["y_train"].iloc[:, 0],
        y_test=frames["y_test"].iloc[:, 0],
        features_train=frames["features_train"],
        features_test=frames["features_test"],
        transformer=transformer,
        data_info=json.loads(storage.read_file(lake, info_files["data_info.json"])),
        manifest=manifest,
    )
