"""Where everything lives in the data lake: the ETL's sets and the models' fallback bundles.

Layout under the lake root (year Y; every path carries it):
    chicago/crimes/Y/raw/<snapshot>/crimes.parquet            raw rows as text, as downloaded
    chicago/crimes/Y/preprocessed/<snapshot>/crimes.parquet   contract features + target
    chicago/crimes/Y/final/<dataset>/X_train.parquet ...      transformed splits, targets and
                                                              the untransformed rows of each split
    chicago/crimes/Y/final/<dataset>/MANIFEST.json            that dataset's manifest
    chicago/crimes/data_info/Y/<dataset>/data_info.json       columns, categories, counts, versions
    chicago/crimes/data_info/Y/<dataset>/transformation.json  the fitted transformation, as data
    chicago/crimes/Y/CURRENT.json                             the manifest readers follow
    chicago/crimes/models/<name>/v<version>/...               a model version's bundle
    chicago/crimes/models/<name>/CURRENT.json                 the model's current fallback
    chicago/crimes/predictions/date=D/model=K/<part>.parquet  the prediction log (gateways)
    chicago/crimes/evaluation/served/<stamp>/<table>.parquet  realized accuracy per version
    chicago/crimes/evaluation/served/LATEST.json              the evaluation readers follow
`<snapshot>` hashes the raw rows, `<dataset>` the published content; both are content ids, so a
rerun on the same input rewrites the same paths with the same bytes.
"""

from __future__ import annotations

CRIMES_PREFIX = "chicago/crimes"


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


def dataset_manifest_key(year: int, dataset: str) -> str:
    """Each published dataset's own manifest (the year's pointer names only the current one)."""
    return f"{final_prefix(year, dataset)}/MANIFEST.json"


def data_info_prefix(year: int, dataset: str) -> str:
    return f"chicago/crimes/data_info/{year}/{dataset}"


def bundle_prefix(name: str, version: str) -> str:
    return f"chicago/crimes/models/{name}/v{version}"


def bundle_pointer(name: str) -> str:
    return f"chicago/crimes/models/{name}/CURRENT.json"


PREDICTION_LOG_PREFIX = "chicago/crimes/predictions"
EVALUATION_PREFIX = "chicago/crimes/evaluation/served"


def prediction_log_key(day: str, kind: str, part: str) -> str:
    """One file of the prediction log: its served day (UTC, YYYY-MM-DD) and model kind."""
    return f"{PREDICTION_LOG_PREFIX}/date={day}/model={kind}/{part}.parquet"


def evaluation_prefix(stamp: str) -> str:
    """One evaluation's tables (`versions`, `days`, `districts`, `confusion`.parquet)."""
    return f"{EVALUATION_PREFIX}/{stamp}"


def evaluation_pointer() -> str:
    return f"{EVALUATION_PREFIX}/LATEST.json"
