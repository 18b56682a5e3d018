"""The fitted feature transformation: contract features -> the models' numeric inputs.

Follows the reference design (median imputation + MinMax for latitude/longitude; one-hot for
arrest, domestic and dia_semana; target encoding + MinMax for the eleven medium-cardinality
columns) with one deliberate change: the target encoder is scikit-learn's multi-class
`TargetEncoder`, one column per FBI code per encoded feature. The reference label-encoded the
26 FBI codes into ordinal integers and averaged those, which mixes unrelated classes; measured on
the 2024 data that capped LDA at 0.949 accuracy against 0.9999 with per-class encodings.

Unknown categories (a new IUCR, say) are encoded as the training prior by the target encoder and
as all-zero by the one-hot encoder. The fitted object gets a version id, a hash of its fitted
state, that travels with every artifact made from it.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any, Final

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, TargetEncoder

from crimes import contract

VERSION_PREFIX: Final = "tf-"


def build(seed: int = 42) -> ColumnTransformer:
    """An unfitted transformation, outputting a pandas frame with stable column names."""
    transformer = ColumnTransformer(
        [
            (
                "num",
                Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", MinMaxScaler())]),
                list(contract.NUMERIC_FEATURES),
            ),
            (
                "onehot",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64),
                list(contract.ONEHOT_FEATURES),
            ),
            (
                "target",
                Pipeline(
                    [
                        (
                            "encode",
                            TargetEncoder(
                                target_type="multiclass",
                                cv=StratifiedKFold(n_splits=5, shuffle=True, random_state=seed),
                            ),
                        ),
                        ("scale", MinMaxScaler()),
                    ]
                ),
                list(contract.TARGET_ENCODED_FEATURES),
            ),
        ],
        remainder="drop",
        verbose_feature_names_out=True,
    )
    transformer.set_output(transform="pandas")
    return transformer


def fit_transform(
    features: pd.DataFrame, target: pd.Series, seed: int = 42
) -> tuple[ColumnTransformer, pd.DataFrame]:
    """Fit on the training split only; returns the fitted transformation and the train matrix.

    The train matrix comes from the target encoder's cross-fitting (each row encoded by folds
    that did not see it), so the models never learn from their own targets leaking through.
    """
    transformer = build(seed)
    matrix = transformer.fit_transform(_inputs(features), target.astype("str"))
    return transformer, matrix.astype("float64")


def transform(transformer: ColumnTransformer, features: pd.DataFrame) -> pd.DataFrame:
    matrix: pd.DataFrame = transformer.transform(_inputs(features))
    return matrix.astype("float64")


def _inputs(features: pd.DataFrame) -> pd.DataFrame:
    # The encoders see categories as objects, so 332 and "332" can never meet in one column.
    frame = contract.as_features_frame(features)
    for name in contract.CATEGORICAL_FEATURES:
        frame[name] = frame[name].astype("object")
    return frame


def version_id(transformer: BaseEstimator) -> str:
    """A content hash of the fitted state: equal fits give equal ids, in any process."""
    digest = hashlib.sha256()
    _feed(digest, transformer)
    return VERSION_PREFIX + digest.hexdigest()[:16]


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, BaseEstimator):
        digest.update(f"<{type(value).__module__}.{type(value).__qualname__}>".encode())
        # Fitted attributes end with "_", parameters do not: together they are the whole state.
        state = vars(value)
        for key in sorted(state):
            digest.update(key.encode())
            _feed(digest, state[key])
    elif isinstance(value, np.ndarray):
        digest.update(f"nd{value.dtype.str}{value.shape}".encode())
        if value.dtype == object:
            digest.update(json.dumps([_plain(v) for v in value.ravel()]).encode())
        else:
            digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        digest.update(b"{")
        for key in sorted(value, key=str):
            _feed(digest, str(key))
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, list | tuple):
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    elif isinstance(value, pd.DataFrame | pd.Series):
        _feed(digest, value.to_numpy())
    elif callable(value):
        digest.update(getattr(value, "__qualname__", type(value).__qualname__).encode())
    else:
        digest.update(repr(_plain(value)).encode())


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value if isinstance(value, str | int | float | bool | None) else repr(value)


def dumps(transformer: ColumnTransformer) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(transformer, buffer)
    return buffer.getvalue()


def loads(data: bytes) -> ColumnTransformer:
    loaded = joblib.load(io.BytesIO(data))
    if not isinstance(loaded, ColumnTransformer):
        raise TypeError(f"not a fitted transformation: {type(loaded).__name__}")
    return loaded
