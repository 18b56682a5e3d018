"""Attack surface: a model service's memory. It admitted 256 concurrent calls of up to 64 MiB
each (16 GiB) under a 768 MiB memory limit: a few clients sending large messages at once
could get a replica killed. Now the admitted calls times the message size, with the copies a
call makes of its message, must fit the memory the deployment gives requests in flight (the
service refuses to start otherwise), and at that limit the service answers on within it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml

from crimes.proto_gen.inference import grpc_service_pb2_grpc as pb_grpc
from crimes.protocol import inference
from crimes.serving.settings import ModelServerSettings, load_settings
from tests.conftest import PROJECT_ROOT
from tests.serving.models import train
from tests.serving.processes import register, start_service
from tests.support.load import MemorySampler, rss_mib

pytestmark = pytest.mark.e2e

CRIMES = str(Path(sys.executable).with_name("crimes"))
MIB = 1024 * 1024
CALLS = 4
MESSAGE = 4 * MIB


def test_limits_that_do_not_fit_the_memory_refuse_to_start() -> None:
    """Attack: the old defaults, 256 calls of 64 MiB, are a deployment's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIMES_MODEL_")}
    done = subprocess.run(
        [CRIMES, "serve", "dtc", "--port", "0"],
        env={
            **env,
            "CRIMES_MODEL_MAX_CONCURRENT_RPCS": "256",
            "CRIMES_MODEL_MAX_MESSAGE_BYTES": str(64 * MIB),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "request_memory_bytes" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr


def test_every_shipped_deployment_gives_its_requests_the_memory_they_may_take() -> None:
    """compose's and Kubernetes' memory limits hold the service (about 150 MB) and what its
    settings let requests in flight take."""
    settings = load_settings("dtc")
    needed = settings.request_memory_bytes + 150 * MIB
    compose = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
    limit = compose["x-model-service"]["mem_limit"]
    assert int(limit.removesuffix("m")) * MIB >= needed, limit
    for kind in ("dtc", "lda"):
        manifest = PROJECT_ROOT / "deploy" / "kubernetes" / "base" / f"model-{kind}.yaml"
        (deployment,) = [
            d for d in yaml.safe_load_all(manifest.read_text()) if d and d["kind"] == "Deployment"
        ]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        memory = container["resources"]["limits"]["memory"]
        assert int(memory.removesuffix("Mi")) * MIB >= needed, (kind, memory)


def test_at_the_limit_the_service_answers_within_its_memory(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """Attack: twice as many clients as it admits, each sending a message of the largest size,
    again and again. Every call is answered (a prediction, or RESOURCE_EXHAUSTED at once),
    the service lives, and its memory grows by no more than what its settings allow."""
    trained = train("dtc", on_array=True)
    name = f"limits_{uuid.uuid4().hex[:8]}"
    register(trained, name)
    width = trained.train.shape[1]
    rows = (MESSAGE - 64 * 1024) // (8 * width)
    limits = {
        "max_concurrent_rpcs": CALLS,
        "max_message_bytes": MESSAGE,
        "max_batch_rows": rows,
        "request_memory_bytes": ModelServerSettings.memory_for(CALLS, MESSAGE),
    }
    service = start_service("dtc", name, stack_env, tmp_path, **limits)
    try:
        service.wait_until("SERVING")
        request = inference.infer_request(
            name, np.full((rows, width), 0.5), trained.transformation_version
        )
        assert request.ByteSize() <= MESSAGE
        codes: list[Any] = []
        with service.channel() as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)

            def ask(_: int) -> Any:
                try:
                    stub.ModelInfer(request, timeout=30)
                    return grpc.StatusCode.OK
                except grpc.RpcError as error:
                    return error.code()

            stub.ModelInfer(request, timeout=30)  # warm: the first answer's own allocations
            before = rss_mib(service.process.pid)
            with (
                MemorySampler(service.process.pid, 0.05) as memory,
                ThreadPoolExecutor(2 * CALLS) as pool,
            ):
                codes = list(pool.map(ask, range(20 * CALLS)))
        grown = max(memory.samples) - before
        print(f"\nat the limit: {codes.count(grpc.StatusCode.OK)} answered, peak +{grown:.0f} MiB")
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        assert codes.count(grpc.StatusCode.OK) >= CALLS
        assert service.process.poll() is None
        assert grown * MIB <= limits["request_memory_bytes"], (grown, limits)
    finally:
        service.stop()
