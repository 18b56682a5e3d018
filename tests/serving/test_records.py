"""Raw crime records over the Open Inference Protocol: one tensor per contract feature,
validated by the contract's rules, transformed by the served version's own transformation, the
same answers as the transformed matrix."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from crimes import contract
from crimes.protocol import inference, records
from tests.serving.harness import NAME, FakeRegistry, running, settings, until
from tests.serving.models import Trained, bundle, labels, probabilities


def careless(record: dict[str, Any]) -> dict[str, Any]:
    """The record as a careless client writes it: text in lower case, padded."""
    return {k: f"  {v.lower()} " if isinstance(v, str) else v for k, v in record.items()}


@pytest.mark.parametrize("kind", ["dtc", "lda"])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_records_get_the_answers_of_their_transformed_rows(
    tmp_path: Path, kind: str, raw: bool, request: pytest.FixtureRequest
) -> None:
    trained: Trained = request.getfixturevalue(kind)
    registry = FakeRegistry()
    registry.publish("1", bundle(trained, NAME, "1"))
    rows = trained.records

    async def scenario() -> list[inference.InferOutput]:
        async with running(settings(tmp_path), registry) as live:
            await until(lambda: live.server.runtime.ready)

            async def ask(batch: list[dict[str, Any]]) -> inference.InferOutput:
                message = records.infer_request(NAME, batch, raw=raw, probabilities=True)
                answer = await live.stub.ModelInfer(message, timeout=10)
                return inference.decode_infer_response(answer)

            # One record, a few (the per-row path), all of them (the column-wise path).
            return [
                await ask(rows[:1]),
                await ask(rows[:5]),
                await ask(rows),
                await ask([careless(r) for r in rows]),
            ]

    one, few, every, variants = asyncio.run(scenario())
    assert one.labels == labels(trained, trained.test[:1])
    assert few.labels == labels(trained, trained.test[:5])
    assert every.labels == labels(trained, trained.test)
    assert every.probabilities is not None
    # The ONNX form's probabilities (float32 arithmetic), the classifier's to 1e-5.
    np.testing.assert_allclose(
        every.probabilities, probabilities(trained, trained.test), rtol=0, atol=1e-5
    )
    assert every.transformation_version == trained.transformation_version
    assert variants.labels == every.labels  # the contract's normalisation, on the gRPC side too


def _edit(change: Any) -> Any:
    def build(trained: Trained) -> Any:
        message = records.infer_request(NAME, trained.records[:3], raw=True)
        change(message)
        return message

    return build


def _drop(name: str) -> Any:
    def change(message: Any) -> None:
        index = [t.name for t in message.inputs].index(name)
        del message.inputs[index]
        del message.raw_input_contents[index]

    return change


def _set_int(name: str, row: int, value: int) -> Any:
    def change(message: Any) -> None:
        index = [t.name for t in message.inputs].index(name)
        data = np.frombuffer(message.raw_input_contents[index], dtype="<i8").copy()
        data[row] = value
        message.raw_input_contents[index] = data.tobytes()

    return change


def _set_text(name: str, values: list[bytes]) -> Any:
    def change(message: Any) -> None:
        index = [t.name for t in message.inputs].index(name)
        message.raw_input_contents[index] = b"".join(
            len(v).to_bytes(4, "little") + v for v in values
        )

    return change


def _set_raw(name: str, data: bytes) -> Any:
    def change(message: Any) -> None:
        index = [t.name for t in message.inputs].index(name)
        message.raw_input_contents[index] = data

    return change


def _datatype(name: str, datatype: str) -> Any:
    def change(message: Any) -> None:
        next(t for t in message.inputs if t.name == name).datatype = datatype

    return change


def _shape(name: str, rows: int) -> Any:
    def change(message: Any) -> None:
        tensor = next(t for t in message.inputs if t.name == name)
        del tensor.shape[:]
        tensor.shape.append(rows)

    return change


RECORD_CASES = [
    ("a required feature left out", _drop("beat"), "lack beat"),
    ("an optional feature left out", None, None),
    ("out of range", _set_int("beat", 2, 0), "input 'beat' row 2: 0 is outside 1..9999"),
    ("hour out of range", _set_int("hora", 1, 24), "input 'hora' row 1"),
    ("blank required text", _set_text("primary_type", [b"THEFT", b"   ", b"THEFT"]), "row 1"),
    ("not UTF-8", _set_text("description", [b"A", b"B", b"\xff\xfe"]), "row 2: not UTF-8"),
    ("iucr too long", _set_text("iucr", [b"0460", b"04600", b"0460"]), "input 'iucr' row 1"),
    ("truncated BYTES", _set_raw("iucr", b"\x04\x00\x00\x000460\x04\x00"), "ends inside"),
    ("wrong datatype", _datatype("beat", "FP64"), "expected INT64 or INT32"),
    ("rows disagree", _shape("ward", 2), "input 'ward' has 2 rows, the others 3"),
]


@pytest.mark.parametrize(
    ("what", "change", "message"), RECORD_CASES, ids=[c[0] for c in RECORD_CASES]
)
def test_bad_records_are_invalid_argument_naming_the_field_and_row(
    tmp_path: Path, dtc: Trained, what: str, change: Any, message: str | None
) -> None:
    registry = FakeRegistry()
    registry.publish("1", bundle(dtc, NAME, "1"))
    request = (
        _edit(change)(dtc) if change is not None else _edit(_drop("location_description"))(dtc)
    )

    async def scenario() -> Any:
        async with running(settings(tmp_path), registry) as live:
            await until(lambda: live.server.runtime.ready)
            try:
                return await live.stub.ModelInfer(request, timeout=10)
            except grpc.aio.AioRpcError as error:
                return error

    answer = asyncio.run(scenario())
    if message is None:  # optional features may be left out: all missing
        assert len(inference.decode_infer_response(answer).labels) == 3
        return
    assert isinstance(answer, grpc.aio.AioRpcError), what
    assert answer.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (answer.details() or "")


def test_column_checks_accept_and_normalise_what_crimefeatures_does() -> None:
    from tests.support.records import REFERENCE_EXAMPLE

    variant = careless(REFERENCE_EXAMPLE)
    columns = {name: [value] for name, value in variant.items()}
    checked = contract.validate_columns(columns, 1)
    expected = contract.CrimeFeatures(**variant).model_dump()
    assert {name: values[0] for name, values in checked.items()} == expected
    with pytest.raises(contract.ContractViolation, match="input 'iucr' row 0"):
        contract.validate_columns({**columns, "iucr": [None]}, 1)


def test_grpcurl_sends_a_raw_record_through_reflection(tmp_path: Path, dtc: Trained) -> None:
    """grpcurl (a real gRPC client that knows the API only through reflection) sends a raw
    record as JSON: the answer is our client's."""
    import json
    import subprocess
    import sys

    from google.protobuf import json_format

    from crimes.proto_gen.inference import grpc_service_pb2 as pb

    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    registry = FakeRegistry()
    registry.publish("1", bundle(dtc, NAME, "1"))
    record = dtc.records[0]
    body = json_format.MessageToJson(records.infer_request(NAME, [record], raw=False))

    async def scenario() -> tuple[str, inference.InferOutput]:
        async with running(settings(tmp_path), registry) as live:
            await until(lambda: live.server.runtime.ready)
            ours = await live.stub.ModelInfer(records.infer_request(NAME, [record]), timeout=10)
            command = [grpcurl, "-plaintext", "-d", "@", live.address,
                       "inference.GRPCInferenceService/ModelInfer"]  # fmt: skip
            ran = await asyncio.to_thread(
                subprocess.run, command, input=body, capture_output=True, text=True, timeout=60
            )
            assert ran.returncode == 0, ran.stderr
            return ran.stdout, inference.decode_infer_response(ours)

    answered, ours = asyncio.run(scenario())
    response = json_format.Parse(answered, pb.ModelInferResponse())
    assert inference.decode_infer_response(response).labels == ours.labels
    said = json.loads(answered)
    assert said.get("modelName", said.get("model_name")) == NAME


def test_unknown_categories_of_records_are_counted_per_feature(
    tmp_path: Path, dtc: Trained
) -> None:
    registry = FakeRegistry()
    registry.publish("1", bundle(dtc, NAME, "1"))
    unseen = [{**record, "iucr": "9999"} for record in dtc.records[:20]]

    async def scenario() -> Any:
        async with running(settings(tmp_path), registry) as live:
            await until(lambda: live.server.runtime.ready)
            await live.stub.ModelInfer(records.infer_request(NAME, unseen), timeout=10)
            return live.server.metrics.registry

    metrics = asyncio.run(scenario())
    labels = {"model": NAME, "feature": "iucr"}
    assert metrics.get_sample_value("crimes_model_unknown_categories_total", labels) == 20
