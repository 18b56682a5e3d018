"""A model version answers a raw crime record: on every row of the real test split (the
session's champions, trained through Airflow), the answers through the record input are the
answers through the transformed matrix, from our client and from tritonclient."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from crimes import registry
from crimes.lake import datasets
from crimes.lake.storage import Lake
from crimes.local import launch
from crimes.proto_gen.inference import grpc_service_pb2_grpc as pb_grpc
from crimes.protocol import inference, records
from crimes.settings import TrackingSettings
from tests.conftest import PROJECT_ROOT
from tests.support.stack import YEAR

pytestmark = pytest.mark.e2e

BATCH = 1000


@pytest.mark.parametrize("kind", ["dtc", "lda"])
def test_every_real_test_row_gets_the_same_answer_through_both_inputs(
    trained: dict[str, Any], tmp_path: Path, kind: str
) -> None:
    final = datasets.load_final(Lake(), YEAR)
    rows = json.loads(final.features_test.to_json(orient="records"))
    matrix = final.X_test.to_numpy(dtype=np.float64)
    env = {"CRIMES_MODEL_TRACKING_URI": TrackingSettings().tracking_uri}
    name = registry.MODELS[kind]
    with (
        launch.serving(kind, env, tmp_path) as service,
        grpc.insecure_channel(
            service.address, options=[("grpc.max_receive_message_length", 64 << 20)]
        ) as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        through_matrix: list[str] = []
        through_records: list[str] = []
        for start in range(0, len(rows), BATCH):
            batch = slice(start, start + BATCH)
            answer = stub.ModelInfer(
                inference.infer_request(name, matrix[batch], final.transformation_version)
            )
            through_matrix += inference.decode_infer_response(answer).labels
            answer = stub.ModelInfer(records.infer_request(name, rows[batch]))
            output = inference.decode_infer_response(answer)
            assert output.transformation_version == final.transformation_version
            through_records += output.labels
        assert len(through_records) == len(rows) > 10_000
        assert through_records == through_matrix
        # An independent client: tritonclient, a tensor per feature.
        sample = tmp_path / "records.json"
        sample.write_text(json.dumps(rows[:500]))
        result = subprocess.run(
            [sys.executable, "-m", "tests.serving.triton_calls"],
            input=json.dumps(
                {"address": service.address, "model": name, "records_file": str(sample)}
            ),
            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(result.stdout)["labels"] == through_matrix[:500]
