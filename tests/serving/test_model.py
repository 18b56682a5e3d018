"""Checks a model version must pass before it serves, and what it refuses per request."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from crimes.serving.errors import InvalidInput, ModelLoadError, PreconditionFailed
from crimes.serving.model import Source, prepare
from crimes.training import onnx_export
from tests.serving.models import Trained, bundle, labels, probabilities


def test_a_good_bundle_serves_the_classifiers_own_answers(dtc: Trained, lda: Trained) -> None:
    for trained in (dtc, lda):
        loaded = prepare(bundle(trained, "m", "1"), Source.LAKE, "s3://x")
        assert loaded.classes == tuple(str(c) for c in trained.model.classes_)
        assert loaded.feature_names == tuple(trained.feature_names)
        served = loaded.predict(trained.test, probabilities=True)
        assert list(served.labels) == labels(trained, trained.test)
        assert served.probabilities is not None
        np.testing.assert_allclose(
            served.probabilities, probabilities(trained, trained.test), atol=1e-5
        )
    # A tree computes on float32 whatever it is given, as scikit-learn's does: any rows.
    tree = prepare(bundle(dtc, "m", "1"), Source.LAKE, "x")
    assert tree.input_datatype == "FP32"
    wide = np.random.default_rng(1).uniform(-2, 3, (500, tree.n_features))
    assert list(tree.predict(wide, probabilities=False).labels) == labels(dtc, wide)


def test_classes_must_be_fbi_codes_as_text(dtc: Trained) -> None:
    numeric = DecisionTreeClassifier(random_state=0).fit(
        dtc.train.to_numpy(), np.arange(len(dtc.train)) % 3
    )
    form = onnx_export.export(numeric, dtc.test.shape[1], "FP32")
    with pytest.raises(ModelLoadError, match="output 'label' is tensor\\(int64\\)"):
        prepare(dataclasses.replace(bundle(dtc, "m", "1"), model=form), Source.LAKE, "x")


def test_inputs_must_be_the_transformations_columns(dtc: Trained) -> None:
    renamed = bundle(dtc, "m", "1")
    renamed.metadata["feature_names"] = [*dtc.feature_names[:-1], "other"]
    with pytest.raises(ModelLoadError, match="the metadata differ"):
        prepare(renamed, Source.LAKE, "x")
    narrow = DecisionTreeClassifier(random_state=0).fit(
        dtc.train.iloc[:, :-3].to_numpy(), labels(dtc, dtc.train.to_numpy())
    )
    form = onnx_export.export(narrow, dtc.test.shape[1] - 3, "FP32")
    with pytest.raises(ModelLoadError, match=f"takes {dtc.test.shape[1] - 3} features"):
        prepare(dataclasses.replace(bundle(dtc, "m", "1"), model=form), Source.LAKE, "x")


def test_the_transformation_must_be_the_tagged_one(dtc: Trained) -> None:
    other = bundle(dtc, "m", "1")
    other.metadata["transformation_version"] = "tf-0000000000000000"
    with pytest.raises(ModelLoadError, match="transformation is tf-"):
        prepare(other, Source.MLFLOW, "x")


def test_what_is_no_declared_onnx_form_is_refused(dtc: Trained) -> None:
    good = bundle(dtc, "m", "1")
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        prepare(dataclasses.replace(good, model=b"\x08\x07garbage"), Source.LAKE, "x")
    with pytest.raises(ModelLoadError, match="metadata classes differ"):
        prepare(
            dataclasses.replace(good, metadata={**good.metadata, "classes": ["01A"]}),
            Source.LAKE,
            "x",
        )


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
