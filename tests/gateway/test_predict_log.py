"""What the gateway's core hands the prediction log for a single-record prediction: a row per
model that answered, with the record's key, the served versions and the confidence."""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow.parquet as pq
import pytest

from crimes import contract
from crimes.etl import synthetic
from crimes.etl.preprocess import preprocess
from crimes.feedback.keys import RecordKeys
from crimes.feedback.settings import PredictionLogSettings
from crimes.feedback.writer import PredictionLog
from crimes.gateway.cache import PredictionCache
from crimes.gateway.calls import ModelCallError, ModelClient, ServiceState
from crimes.gateway.metrics import GatewayMetrics
from crimes.gateway.predict import Predictor
from crimes.gateway.transformation_store import TransformationStore
from crimes.ops import requests
from crimes.protocol import inference
from crimes.protocol.outcomes import Outcome
from crimes.transformation import fitting
from crimes.transformation.lookup import LookupTransformer
from tests.support.records import REFERENCE_EXAMPLE


@pytest.fixture(scope="module")
def transformer() -> LookupTransformer:
    data, _ = preprocess(synthetic.sample(500))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted, _ = fitting.fit_transform(data[list(contract.FEATURES)], data[contract.TARGET])
    return LookupTransformer(fitting.export(fitted))


class Store:
    """The transformation store, holding one transformation already loaded."""

    def __init__(self, transformer: LookupTransformer) -> None:
        self.transformer = transformer

    async def get(self, version: str, model_name: str, model_version: str) -> LookupTransformer:
        return self.transformer


class Service:
    """A model service that answers `code` with `confidence`, or fails when `code` is None."""

    deadline_seconds = 1.0

    def __init__(self, kind: str, code: str | None, confidence: float) -> None:
        self.model_name = f"{kind}_model_prod"
        self.address = "nowhere"
        self.state = ServiceState(ready=True, model_version="4", transformation_version="tf-2")
        self.code, self.confidence = code, confidence

    async def infer(
        self,
        features: np.ndarray,
        transformation_version: str,
        probabilities: bool,
        request_ids: Sequence[str] = (),
        confidence: bool = False,
    ) -> inference.InferOutput:
        if self.code is None:
            raise ModelCallError(Outcome.UNAVAILABLE, "down")
        return inference.InferOutput(
            model_version="4",
            transformation_version=transformation_version,
            labels=[self.code],
            probabilities=None,
            classes=None,
            confidence=np.array([self.confidence], np.float32) if confidence else None,
        )

    def refresh_soon(self) -> None:
        pass


class Sink:
    def __init__(self) -> None:
        self.files: list[bytes] = []

    def write(self, key: str, data: bytes) -> None:
        self.files.append(data)


def logged(
    tmp_path: Path, transformer: LookupTransformer, codes: dict[str, str | None], key: Any
) -> list[dict[str, Any]]:
    """The log's rows for one record predicted by services answering `codes`."""
    sink = Sink()
    log = PredictionLog(sink, PredictionLogSettings(spill_dir=tmp_path / "spill"))
    services = {kind: Service(kind, code, 0.75) for kind, code in codes.items()}
    store = cast(TransformationStore, Store(transformer))
    predictor = Predictor(
        cast(dict[str, ModelClient], services), store, GatewayMetrics(), PredictionCache(None, 1)
    )
    predictor.log = log

    async def predict() -> None:
        requests.current.set("req-1")
        await predictor.predict_one(dict(REFERENCE_EXAMPLE), record_key=key)

    asyncio.run(predict())
    assert log.flush() or not sink.files
    rows = [row for data in sink.files for row in pq.read_table(io.BytesIO(data)).to_pylist()]
    return sorted(rows, key=lambda row: row["model"])


def test_a_single_record_is_logged_once_per_model_with_its_key(
    tmp_path: Path, transformer: LookupTransformer
) -> None:
    key = RecordKeys(["13311263"], ["JH100100"])
    rows = logged(tmp_path, transformer, {"dtc": "06", "lda": "07"}, key)
    assert [(r["model"], r["fbi_code"]) for r in rows] == [("dtc", "06"), ("lda", "07")]
    for row in rows:
        assert row["request_id"] == "req-1"
        assert (row["record_id"], row["case_number"]) == ("13311263", "JH100100")
        assert (row["model_version"], row["transformation_version"]) == ("4", "tf-2")
        assert row["model_name"] == f"{row['model']}_model_prod"
        assert (row["role"], row["row"]) == ("champion", 0)
        assert row["confidence"] == pytest.approx(0.75)


def test_a_model_that_did_not_answer_logs_nothing_and_a_keyless_record_logs_no_key(
    tmp_path: Path, transformer: LookupTransformer
) -> None:
    rows = logged(tmp_path, transformer, {"dtc": None, "lda": "07"}, None)
    assert [(r["model"], r["record_id"], r["case_number"]) for r in rows] == [("lda", None, None)]
    assert logged(tmp_path, transformer, {"dtc": None, "lda": None}, None) == []
