"""The transformation as data: a canonical document whose hash is its version, read back only
after its hash and its structure are checked."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pandas as pd
import pytest

from crimes import contract
from crimes.etl import synthetic
from crimes.etl.preprocess import preprocess
from crimes.transformation import document, fitting
from crimes.transformation.document import DocumentError, TransformationDocument


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    features, _ = preprocess(synthetic.sample(3000))
    return features


def export(data: pd.DataFrame) -> TransformationDocument:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted, _ = fitting.fit_transform(data[list(contract.FEATURES)], data[contract.TARGET])
    return fitting.export(fitted)


@pytest.fixture(scope="module")
def exported(data: pd.DataFrame) -> TransformationDocument:
    return export(data)


def test_the_version_is_the_hash_of_the_document(
    data: pd.DataFrame, exported: TransformationDocument
) -> None:
    assert export(data).data == exported.data  # equal fits, equal bytes, in any process
    assert export(data.iloc[: len(data) // 2]).version != exported.version
    assert exported.version == document.version_of(exported.data)
    assert exported.version.startswith("tf-")
    assert document.loads(exported.data, exported.version) == exported
    # Canonical: the bytes are what the value serializes to, keys sorted, no spaces.
    assert document.canonical(json.loads(exported.data)) == exported.data


def test_it_says_what_the_reference_design_does(exported: TransformationDocument) -> None:
    assert exported.contract_version == contract.CONTRACT_VERSION
    assert exported.output_columns[:2] == ("num__latitude", "num__longitude")
    assert [n.feature for n in exported.numeric] == list(contract.NUMERIC_FEATURES)
    by_feature = {c.feature: c for c in exported.categorical}
    assert {category for category, _ in by_feature["arrest"].categories} == {False, True}
    assert by_feature["arrest"].unknown == (0.0, 0.0)  # one-hot: all zero
    beats = [category for category, _ in by_feature["beat"].categories]
    assert all(type(b) is int for b in beats)  # codes stay integers, never "332"


def _altered(exported: TransformationDocument, change: Any) -> bytes:
    value = json.loads(exported.data)
    change(value)
    return document.canonical(value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda v: v.update(format="other/1"), "format"),
        (lambda v: v.update(contract_version="contract-0"), "made for contract"),
        (lambda v: v["numeric"][0].update(column=10_000), "is not one of the"),
        (lambda v: v["numeric"][0].update(median=None), "not a finite number"),
        (lambda v: v["categorical"][0]["categories"][0].__setitem__(0, 1), "not of the feature"),
        (lambda v: v["categorical"].pop(), "categorical features must be"),
        (lambda v: v["categorical"][3]["unknown"].pop(), "expected"),
        (lambda v: v["output_columns"].append("extra"), "exactly one feature"),
        (lambda v: v.update(numeric="no"), "numeric must be a list"),
    ],
)
def test_a_malformed_document_is_refused_with_the_reason(
    exported: TransformationDocument, change: Any, message: str
) -> None:
    with pytest.raises(DocumentError, match=message):
        document.loads(_altered(exported, change))


def test_an_altered_or_other_document_is_refused_by_its_hash(
    exported: TransformationDocument,
) -> None:
    tampered = exported.data.replace(b'"median":', b'"median": ', 1)
    with pytest.raises(DocumentError, match="another or an altered transformation"):
        document.loads(tampered, exported.version)
    with pytest.raises(DocumentError, match="not JSON"):
        document.loads(b"\x80 not json")
    with pytest.raises(DocumentError, match="must be an object"):
        document.loads(b"[]")
