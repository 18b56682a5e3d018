"""Calls a model service through tritonclient (an inference client this project did not write).

Run as a child process: tritonclient registers its own `inference` protos in protobuf's default
pool, which refuses ours in the same process.

    python -m tests.serving.triton_calls  < {"address", "model", "features_file", ...}  > JSON
"""

from __future__ import annotations

import json
import sys
from typing import Any


def call(
    address: str, model: str, features_file: str, transformation_version: str
) -> dict[str, Any]:
    import numpy as np
    import tritonclient.grpc as triton  # type: ignore[import-untyped]

    features = np.load(features_file)
    client = triton.InferenceServerClient(url=address)
    metadata = client.get_model_metadata(model, as_json=True)
    inputs = [triton.InferInput("features", list(features.shape), "FP64")]
    inputs[0].set_data_from_numpy(features.astype(np.float64))
    outputs = [
        triton.InferRequestedOutput("fbi_code"),
        triton.InferRequestedOutput("probabilities"),
        triton.InferRequestedOutput("confidence"),
    ]
    result = client.infer(
        model,
        inputs,
        outputs=outputs,
        request_id="triton-1",
        parameters={"transformation_version": transformation_version},
    )
    response = result.get_response(as_json=True)
    probabilities = result.as_numpy("probabilities")
    answer = {
        "server_live": client.is_server_live(),
        "server_ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "other_model_ready": client.is_model_ready(model + "_missing"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "metadata": metadata,
        "labels": [b.decode() for b in result.as_numpy("fbi_code").tolist()],
        "probabilities_hex": probabilities.astype("<f8").tobytes().hex(),
        "probabilities_shape": list(probabilities.shape),
        "confidence": result.as_numpy("confidence").astype(float).tolist(),
        "model_version": response["model_version"],
        "id": response.get("id", ""),
        "parameters": response.get("parameters", {}),
    }
    client.close()
    return answer


def call_records(address: str, model: str, records_file: str) -> dict[str, Any]:
    """Raw records, one tensor per feature (BYTES, BOOL, INT64, FP64 with NaN for missing)."""
    import numpy as np
    import tritonclient.grpc as triton

    from crimes import contract

    records = json.loads(open(records_file).read())  # noqa: SIM115
    kinds = {"text": ("BYTES", object), "bool": ("BOOL", bool), "int": ("INT64", np.int64)}
    inputs = []
    for spec in contract.FEATURE_SPECS:
        values = [record.get(spec.name) for record in records]
        if spec.kind == "float":
            datatype, array = (
                "FP64",
                np.array([np.nan if v is None else v for v in values], dtype=np.float64),
            )
        else:
            datatype, dtype = kinds[spec.kind]
            if spec.kind == "text":
                values = [b"" if v is None else str(v).encode() for v in values]
            array = np.array(values, dtype=dtype)
        tensor = triton.InferInput(spec.name, [len(records)], datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    client = triton.InferenceServerClient(url=address)
    result = client.infer(model, inputs, outputs=[triton.InferRequestedOutput("fbi_code")])
    labels = [b.decode() for b in result.as_numpy("fbi_code").tolist()]
    client.close()
    return {"labels": labels}


if __name__ == "__main__":
    request = json.loads(sys.stdin.read())
    if "records_file" in request:
        json.dump(call_records(**request), sys.stdout)
    else:
        json.dump(call(**request), sys.stdout)
