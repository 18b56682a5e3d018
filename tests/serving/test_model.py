"""Checks a model version must pass before it serves, and what it refuses per request."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from crimes.serving.errors import InvalidInput, ModelLoadError, PreconditionFailed
from crimes.serving.model import Source, prepare
from tests.serving.models import Trained, bundle, labels


def test_a_good_bundle_prepares_with_the_direct_label_path(dtc: Trained, lda: Trained) -> None:
    for trained in (dtc, lda):
        loaded = prepare(bundle(trained, "m", "1"), Source.LAKE, "s3://x")
        assert loaded.direct_labels is not None
        assert loaded.classes == tuple(str(c) for c in trained.model.classes_)
        assert loaded.feature_names == tuple(trained.feature_names)
        wide = np.vstack(
            [
                trained.test,
                np.random.default_rng(1).uniform(-2, 3, (500, 200))[:, : loaded.n_features],
            ]
        )
        assert list(loaded.predict(wide, probabilities=False).labels) == labels(trained, wide)


def test_the_direct_path_is_dropped_when_it_disagrees(
    dtc: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crimes.serving import model as model_module

    def wrong(model: object) -> model_module.LabelFunction:
        return lambda rows: np.full(len(rows), "01A", dtype=object)

    monkeypatch.setattr(model_module, "_direct_labels", wrong)
    loaded = prepare(bundle(dtc, "m", "1"), Source.LAKE, "s3://x")
    assert loaded.direct_labels is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        served = list(loaded.predict(dtc.test, False).labels)
    assert served == labels(dtc, dtc.test)


def test_classes_must_be_fbi_codes_as_text(dtc: Trained) -> None:
    numeric = DecisionTreeClassifier(random_state=0).fit(
        dtc.train.to_numpy(), np.arange(len(dtc.train)) % 3
    )
    with pytest.raises(ModelLoadError, match="FBI codes as text"):
        prepare(
            dataclasses.replace(
                bundle(dtc, "m", "1"),
                model=numeric,
                metadata={**bundle(dtc, "m", "1").metadata, "classes": ["0", "1", "2"]},
            ),
            Source.LAKE,
            "x",
        )


def test_inputs_must_be_the_transformations_columns(dtc: Trained) -> None:
    with pytest.raises(ModelLoadError, match="logged signature differ"):
        prepare(bundle(dtc, "m", "1"), Source.MLFLOW, "x", signature_columns=dtc.feature_names[:-1])
    renamed = bundle(dtc, "m", "1")
    renamed.metadata["feature_names"] = [*dtc.feature_names[:-1], "other"]
    with pytest.raises(ModelLoadError, match="the metadata differ"):
        prepare(renamed, Source.LAKE, "x")


def test_the_transformation_must_be_the_tagged_one(dtc: Trained) -> None:
    other = bundle(dtc, "m", "1")
    other.metadata["transformation_version"] = "tf-0000000000000000"
    with pytest.raises(ModelLoadError, match="transformation is tf-"):
        prepare(other, Source.MLFLOW, "x")


def test_a_classifier_fitted_on_other_columns_fails_its_checks(dtc: Trained) -> None:
    narrow = DecisionTreeClassifier(random_state=0).fit(
        dtc.train.iloc[:, :-3], labels(dtc, dtc.train.to_numpy())
    )
    with pytest.raises(ModelLoadError, match="classifier's fitted columns differ"):
        prepare(dataclasses.replace(bundle(dtc, "m", "1"), model=narrow), Source.LAKE, "x")


class _BrokenProbabilities:
    """A fitted classifier whose probabilities fail, as a corrupted artifact might."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.classes_ = inner.classes_
        self.n_features_in_ = inner.n_features_in_
        self.feature_names_in_ = inner.feature_names_in_

    def predict(self, rows: Any) -> Any:
        return self.inner.predict(rows)

    def predict_proba(self, rows: Any) -> Any:
        raise ValueError("corrupted tree")


def test_a_model_that_cannot_predict_fails_the_smoke_check(dtc: Trained) -> None:
    broken = _BrokenProbabilities(dtc.model)
    with pytest.raises(ModelLoadError, match=r"smoke prediction failed.*corrupted tree"):
        prepare(dataclasses.replace(bundle(dtc, "m", "1"), model=broken), Source.LAKE, "x")


def test_requests_are_checked_against_the_loaded_model(dtc: Trained) -> None:
    loaded = prepare(bundle(dtc, "m", "1"), Source.LAKE, "x")
    good = dtc.test[:2]
    loaded.check_features(good, dtc.transformation_version)
    with pytest.raises(InvalidInput, match="is missing"):
        loaded.check_features(good, None)
    with pytest.raises(PreconditionFailed, match=f"needs {dtc.transformation_version}"):
        loaded.check_features(good, "tf-1111111111111111")
    with pytest.raises(InvalidInput, match=f"needs {loaded.n_features}"):
        loaded.check_features(good[:, 1:], dtc.transformation_version)
    bad = good.copy()
    bad[1, 4] = -np.inf
    with pytest.raises(InvalidInput, match=rf"row 1, column 4 \({dtc.feature_names[4]}\) is -inf"):
        loaded.check_features(bad, dtc.transformation_version)
