"""The Open Inference Protocol as both sides speak it: what a client encodes, a server decodes,
and back (no model involved)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from crimes.protocol import inference

FEATURES = np.random.default_rng(0).uniform(size=(3, 299))


def test_model_metadata_reads_back_as_it_was_written() -> None:
    info = inference.ModelInfo(
        name="dtc_model_prod",
        version="3",
        platform="sklearn",
        n_features=299,
        transformation_version="tf-0123456789abcdef",
        run_id="abc",
        classes=("06", "08B"),
        feature_names=("num__latitude", "num__longitude"),
        source="mlflow",
        location="models:/dtc_model_prod/3",
        alias="champion",
        model_class="DecisionTreeClassifier",
        loaded_at="2026-12-01T00:00:00+00:00",
        max_batch_rows=10_000,
    )
    response = inference.encode_model_metadata(info)
    # Both input forms: the transformed matrix, and a raw record's features one by one.
    assert [(t.name, t.datatype, list(t.shape)) for t in response.inputs] == [
        ("features", "FP64", [-1, 299]),
        ("iucr", "BYTES", [-1]),
        ("primary_type", "BYTES", [-1]),
        ("description", "BYTES", [-1]),
        ("location_description", "BYTES", [-1]),
        ("arrest", "BOOL", [-1]),
        ("domestic", "BOOL", [-1]),
        *[(name, "INT64", [-1]) for name in ("beat", "district", "ward", "community_area")],
        ("latitude", "FP64", [-1]),
        ("longitude", "FP64", [-1]),
        *[(name, "INT64", [-1]) for name in ("mes", "dia_mes", "dia_semana", "hora")],
    ]
    assert inference.decode_model_metadata(response) == info
    assert not info.label_index  # an older service: no label indices advertised
    indexed = dataclasses.replace(info, label_index=True)
    response = inference.encode_model_metadata(indexed)
    assert ("fbi_code_index", "INT32", [-1]) in [
        (t.name, t.datatype, list(t.shape)) for t in response.outputs
    ]
    assert inference.decode_model_metadata(response) == indexed


@pytest.mark.parametrize("raw", [True, False])
def test_labels_asked_as_indices_read_back_as_the_labels(raw: bool) -> None:
    labels = inference.Labels(["06", "08B", "14"])
    answered = np.array(["14", "06", "08B", "14"])
    request = inference.infer_request(
        "m", np.zeros((4, 2), dtype=np.float32), "tf-x", raw=raw, confidence=True,
        datatype="FP32", label_index=True,
    )  # fmt: skip
    decoded = inference.decode_infer_request(request, max_rows=10)
    assert decoded.outputs == ("fbi_code_index", "confidence")
    answer = inference.Answer(
        model_name="m",
        model_version="2",
        transformation_version="tf-x",
        labels=answered,
        probabilities=np.full((4, 3), 1 / 3),
        encoding=labels,
    )
    response = inference.encode_infer_response(request, decoded, answer)
    (indices,) = [o for o in response.outputs if o.name == "fbi_code_index"]
    assert indices.datatype == "INT32"
    output = inference.decode_infer_response(response)
    assert output.labels == ["14", "06", "08B", "14"]
    assert output.confidence is not None
    assert len(output.confidence) == 4
    # As sent, for the prediction log: the indices and the classes they index.
    assert output.indexed is not None
    assert output.indexed.indices.tolist() == [2, 0, 1, 2]
    assert json.loads(output.indexed.classes_json) == ["06", "08B", "14"]
    assert output.indexed.part(slice(1, 3)).indices.tolist() == [0, 1]


def test_a_label_index_outside_the_classes_named_is_a_malformed_answer() -> None:
    classes = '["06", "08B"]'
    assert inference.indexed_labels(classes, np.array([1, 0], dtype=np.int32)) == ["08B", "06"]
    assert inference.indexed_labels(classes, np.array([], dtype=np.int32)) == []
    many = np.array([0, 1] * 20, dtype=np.int32)  # past the few rows decoded without numpy
    assert inference.indexed_labels(classes, many) == ["06", "08B"] * 20
    for bad in ([2], [-1], [0] * 30 + [2], [-1] + [1] * 30):
        with pytest.raises(ValueError, match="outside the 2 classes"):
            inference.indexed_labels(classes, np.array(bad, dtype=np.int32))
    with pytest.raises(ValueError, match="not a list"):
        inference.indexed_labels('{"06": 1}', np.array([0], dtype=np.int32))


def test_answers_read_back_as_the_server_gave_them() -> None:
    labels = inference.Labels(["06", "08B", "14"])
    for raw in (True, False):
        request = inference.infer_request(
            "m", np.zeros((3, 2)), "tf-x", raw=raw, probabilities=True
        )
        decoded = inference.decode_infer_request(request, max_rows=10)
        probabilities = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
        answer = inference.Answer(
            model_name="m",
            model_version="2",
            transformation_version="tf-x",
            labels=np.array(["14", "06", "08B"]),
            probabilities=probabilities,
            encoding=labels,
        )
        output = inference.decode_infer_response(
            inference.encode_infer_response(request, decoded, answer)
        )
        assert output.labels == ["14", "06", "08B"]
        assert output.model_version == "2"
        assert output.classes == ("06", "08B", "14")
        assert output.probabilities is not None
        assert np.array_equal(output.probabilities, probabilities)


@pytest.mark.parametrize("raw", [True, False])
def test_client_requests_decode_on_the_server(raw: bool) -> None:
    request = inference.infer_request("m", FEATURES, "tf-x", probabilities=True, raw=raw)
    decoded = inference.decode_infer_request(request, max_rows=10)
    assert np.array_equal(decoded.features, FEATURES)
    assert decoded.transformation_version == "tf-x"
    assert decoded.outputs == ("fbi_code", "probabilities")
    assert decoded.raw is raw


@pytest.mark.parametrize("raw", [True, False])
def test_fp32_features_stay_float32_through_decoding(raw: bool) -> None:
    features = np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    request = inference.infer_request("m", features, "tf-x", raw=raw, datatype="FP32")
    decoded = inference.decode_infer_request(request, max_rows=10)
    # No copy to float64 and back: a tree computes on float32 anyway.
    assert decoded.features.dtype == np.float32
    assert np.array_equal(decoded.features, features)
    fp64 = inference.decode_infer_request(
        inference.infer_request("m", features, "tf-x", raw=raw), max_rows=10
    )
    assert fp64.features.dtype == np.float64


def test_raw_bytes_tensors_split_into_their_elements() -> None:
    data = b"".join(len(s).to_bytes(4, "little") + s for s in (b"06", b"", b"08B"))
    assert inference.split_bytes(data) == [b"06", b"", b"08B"]
    assert inference.join_bytes([b"06", b"", b"08B"]) == data
    # Data that ends inside a length or an element is the sender's error, not a short list.
    for truncated in (data[:-1], data[:2], data + b"\x05\x00"):
        with pytest.raises(inference.InvalidInput, match="ends inside"):
            inference.split_bytes(truncated)
