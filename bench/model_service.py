"""Benchmark (not a test): one model service process, through the Open Inference Protocol.

Trains a model on the real 2024 file (its first `--rows` rows; synthetic records when the file
is absent), writes it as a model bundle and starts `crimes serve dtc|lda` on free ports serving
that bundle (MLflow pointed at a closed port: the fallback path; once loaded, a model serves
the same whatever its source). Then, over loopback gRPC:

- single-row ModelInfer at concurrency 1 and 16 from `bench/grpc_load.cc`, a C++ load generator
  (what wrk is for HTTP; built here with g++ against Debian's libgrpc++-dev), and from Python
  clients (a blocking one at concurrency 1, an asyncio one at 16), which cost about as much CPU
  per call as the service itself and share its two cores;
- the same single rows sent as raw records (a tensor per contract feature, transformed by the
  service), and 1,000-record batches;
- 1,000-row ModelInfer batches, labels only and with probabilities, and 1,000 records in each
  input form (matrix, raw records, records in typed contents) with the service's CPU per call:
  the gateway sends the form that costs least;
- the service's peak resident memory (VmHWM).

Targets on this 2-core machine: single-row p50 <= 0.5 ms at concurrency 1, >= 3,000 single-row
requests/s at concurrency 16, peak memory <= 400 MB; a single raw record p50 <= 0.6 ms at
concurrency 1 and >= 3,000/s at concurrency 16. Client and server share the two cores.

    .venv/bin/python bench/model_service.py [--model dtc|lda] [--rows N] [--seconds S]

The service runs with its defaults; `CRIMES_MODEL_GRPC_EXPERIMENTS= .venv/bin/python
bench/model_service.py` runs it on gRPC core's own defaults instead (EventEngine's listener:
on this VM ~0.65 ms at concurrency 1 instead of ~0.40).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
import numpy.typing as npt
from _stack import data_file
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crimes import contract, registry
from crimes.local import stack
from crimes.proto_gen.inference import grpc_service_pb2 as pb
from crimes.proto_gen.inference import grpc_service_pb2_grpc as pb_grpc
from crimes.protocol import inference, records
from crimes.registry import bundles
from crimes.training import onnx_export
from crimes.transformation import fitting

Matrix = npt.NDArray[np.float64]


def build_bundle(
    kind: str, data: str, rows: int, folder: Path
) -> tuple[str, Matrix, list[dict[str, Any]], str]:
    """Train on the data's first rows; the bundle's transformation version, the test rows
    (transformed, and as raw records), where the data came from."""
    import pandas as pd
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.tree import DecisionTreeClassifier

    from crimes.etl import synthetic
    from crimes.etl.preprocess import preprocess

    if Path(data).is_file():
        raw = pd.read_csv(data, dtype=str, keep_default_na=False, na_values=[""], nrows=rows)
        source = f"{Path(data).name} (first {rows:,} rows)"
    else:
        raw, source = synthetic.sample(rows), f"SYNTHETIC sample ({rows:,} rows)"
    frame, _ = preprocess(raw)
    cut = int(len(frame) * 0.7)
    features, target = frame[list(contract.FEATURES)], frame[contract.TARGET].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted, train = fitting.fit_transform(features.iloc[:cut], target.iloc[:cut])
        test = fitting.transform(fitted, features.iloc[cut:]).to_numpy()
    model: Any = (
        DecisionTreeClassifier(random_state=42) if kind == "dtc" else LinearDiscriminantAnalysis()
    )
    model.fit(train.to_numpy(), target.iloc[:cut].to_numpy())
    name = registry.MODELS[kind]
    transformation = fitting.export(fitted)
    version = transformation.version
    # What the services run: the ONNX form, checked label for label as the training does.
    form = onnx_export.export_checked(model, onnx_export.check_rows(test, transformation))
    bundles.save_bundle_dir(
        folder, bundles.bundle_of(name, "1", "bench", form.data, transformation, trained_on=source)
    )
    test_records = json.loads(features.iloc[cut:].to_json(orient="records"))
    return version, test, test_records, source


def start_service(
    kind: str, bundle: Path, scratch: Path, cpus: set[int] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """The service on a free port; on the given CPUs only (all its threads) when `cpus` is set."""
    port = stack.free_port()
    env = {
        **os.environ,
        "CRIMES_MODEL_TRACKING_URI": f"http://127.0.0.1:{stack.free_port()}",
        "CRIMES_MODEL_BUNDLE_PATH": str(bundle),
        "CRIMES_MODEL_USE_LAKE_BUNDLE": "false",
        "CRIMES_MODEL_LOCAL_DIR": str(scratch / "serving"),
        "CRIMES_MODEL_POLL_INTERVAL_SECONDS": "5",
    }
    command = [
        str(Path(sys.executable).parent / "crimes"),
        *("serve", kind, "--port", str(port), "--metrics-port", str(stack.free_port())),
    ]
    log = (scratch / "service.log").open("wb")
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin
    )
    return process, port


def wait_serving(address: str, name: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the service exited with {process.returncode}")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise SystemExit("the service did not become ready")


def blocking(address: str, requests: list[Any], count: int) -> tuple[list[float], float]:
    """Latencies of `count` calls, one at a time, and the wall time they took.

    ModelInferRequests go to ModelInfer; ServerLiveRequests to ServerLive, the cheapest call
    there is: its latency is the gRPC transport's floor on this machine, at this moment.
    """
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        call: Any = (
            stub.ModelInfer if isinstance(requests[0], pb.ModelInferRequest) else stub.ServerLive
        )
        for request in requests[:200]:
            call(request)
        latencies = []
        started = time.perf_counter()
        for i in range(count):
            begin = time.perf_counter()
            call(requests[i % len(requests)])
            latencies.append(time.perf_counter() - begin)
        return latencies, time.perf_counter() - started


async def concurrent(
    address: str, requests: list[Any], concurrency: int, seconds: float
) -> tuple[list[float], float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        call: Any = (
            stub.ModelInfer if isinstance(requests[0], pb.ModelInferRequest) else stub.ServerLive
        )
        await asyncio.gather(*(call(r) for r in requests[:concurrency]))
        latencies: list[float] = []
        end = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            index = offset
            while time.perf_counter() < end:
                begin = time.perf_counter()
                await call(requests[index % len(requests)])
                latencies.append(time.perf_counter() - begin)
                index += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return latencies, time.perf_counter() - started


LOAD_GENERATOR = Path(__file__).resolve().parent / "grpc_load.cc"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
LIVE_METHOD = "/inference.GRPCInferenceService/ServerLive"


def build_load_generator(folder: Path) -> Path | None:
    """The C++ load generator, compiled for this run; None (and why) when it cannot be."""
    pkg = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "grpc++"], capture_output=True, text=True
    ) if shutil.which("pkg-config") else None  # fmt: skip
    if shutil.which("g++") is None or pkg is None or pkg.returncode != 0:
        print("C++ load generator skipped: apt-get install g++ pkg-config libgrpc++-dev")
        return None
    binary = folder / "grpc_load"
    subprocess.run(
        ["g++", "-O2", "-std=c++17", str(LOAD_GENERATOR), "-o", str(binary), *pkg.stdout.split()],
        check=True,
    )
    return binary


def write_requests(path: Path, requests: list[Any]) -> Path:
    with path.open("wb") as out:
        for request in requests:
            data = request.SerializeToString()
            out.write(struct.pack("<I", len(data)) + data)
    return path


def load_generator(
    binary: Path, address: str, method: str, requests: Path, concurrency: int, **run: float
) -> dict[str, Any]:
    """One grpc_load run: `count=N` calls in all or `seconds=S` of calls."""
    command = [str(binary), "--target", address, "--method", method, "--requests", str(requests)]
    command += ["--concurrency", str(concurrency)]
    for key, value in run.items():
        command += [f"--{key}", str(value)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    result: dict[str, Any] = json.loads(done.stdout)
    if result["errors"]:
        raise SystemExit(f"grpc_load: {result['errors']} failed calls: {result['first_error']}")
    return result


def generated_row(what: str, result: dict[str, Any]) -> str:
    rate = result["calls_per_second"]
    return (
        f"{what:<46} {result['calls']:>7,} {rate:>10,.0f} {rate:>12,.0f} "
        f"{result['p50_ms']:>8.3f} {result['p99_ms']:>8.3f}"
    )


def service_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its warm-up calls included by callers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def row(what: str, latencies: list[float], wall: float, unit_rows: int = 1) -> str:
    """One line of the report: calls, calls/s, rows/s, p50 and p99 latency."""
    ms = np.percentile(np.array(latencies) * 1000, [50, 99])
    rate = len(latencies) / wall
    return (
        f"{what:<46} {len(latencies):>7,} {rate:>10,.0f} {rate * unit_rows:>12,.0f} "
        f"{ms[0]:>8.3f} {ms[1]:>8.3f}"
    )


TARGET_P50_MS = 0.5
TARGET_RECORD_P50_MS = 0.6
TARGET_RATE_C16 = 3000.0
TARGET_MEMORY_MB = 400.0


def verdicts(judged: dict[int, dict[str, Any]], memory_mb: float) -> list[str]:
    """Each target, its figure and whether it held (latency and rate need the C++ client)."""

    def verdict(held: bool) -> str:
        return "MET" if held else "MISSED"

    lines = []
    if judged:
        p50, rate = judged[1]["p50_ms"], judged[16]["calls_per_second"]
        lines += [
            f"single-row p50 at concurrency 1: {p50:.3f} ms (target <= {TARGET_P50_MS:g} ms): "
            f"{verdict(p50 <= TARGET_P50_MS)}",
            f"single-row calls/s at concurrency 16: {rate:,.0f} (target >= "
            f"{TARGET_RATE_C16:,.0f}): {verdict(rate >= TARGET_RATE_C16)}",
        ]
    else:
        lines.append("latency and rate targets: not judged (no C++ load generator)")
    lines.append(
        f"peak memory: {memory_mb:.0f} MB (target <= {TARGET_MEMORY_MB:g} MB): "
        f"{verdict(memory_mb <= TARGET_MEMORY_MB)}"
    )
    return lines


def record_verdicts(judged: dict[int, dict[str, Any]]) -> list[str]:
    """The raw-record targets: single record p50 <= 0.6 ms at c=1, >= 3,000/s at c=16."""
    if not judged:
        return ["raw-record targets: not judged (no C++ load generator)"]
    p50, rate = judged[1]["p50_ms"], judged[16]["calls_per_second"]
    return [
        f"single raw record p50 at concurrency 1: {p50:.3f} ms (target <= "
        f"{TARGET_RECORD_P50_MS:g} ms): {'MET' if p50 <= TARGET_RECORD_P50_MS else 'MISSED'}",
        f"single raw record calls/s at concurrency 16: {rate:,.0f} (target >= "
        f"{TARGET_RATE_C16:,.0f}): {'MET' if rate >= TARGET_RATE_C16 else 'MISSED'}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(registry.MODELS), default="dtc")
    parser.add_argument("--data", default=data_file())
    parser.add_argument("--rows", type=int, default=60_000, help="rows of the file to train on")
    parser.add_argument("--seconds", type=float, default=10.0, help="of the concurrent run")
    parser.add_argument("--count", type=int, default=10_000, help="single-row calls at c=1")
    parser.add_argument(
        "--service-cpus",
        help="pin the service to these CPUs (e.g. 0): its gRPC threads then hand calls to each "
        "other on one core, which lowers latency at concurrency 1 and caps throughput at one core",
    )
    args = parser.parse_args()
    name = registry.MODELS[args.model]
    with tempfile.TemporaryDirectory(prefix="crimes-bench-serving-") as folder:
        scratch = Path(folder)
        started = time.perf_counter()
        version, test, test_records, source = build_bundle(
            args.model, args.data, args.rows, scratch / "bundle"
        )
        print(f"model: {name} ({args.model}) on {source}, {test.shape[1]} features, "
              f"trained in {time.perf_counter() - started:.1f} s")  # fmt: skip
        cpus = None if args.service_cpus is None else {int(c) for c in args.service_cpus.split(",")}
        process, port = start_service(args.model, scratch / "bundle", scratch, cpus)
        address = f"127.0.0.1:{port}"
        try:
            started = time.perf_counter()
            wait_serving(address, name, process)
            print(
                f"service ready in {time.perf_counter() - started:.1f} s (pid {process.pid}, "
                f"CPUs {sorted(os.sched_getaffinity(process.pid))})"
            )
            singles = [inference.infer_request(name, test[i : i + 1], version) for i in range(1000)]
            batches = [
                inference.infer_request(name, test[i : i + 1000], version)
                for i in range(0, len(test) - 1000, 1000)
            ][:20]
            with_probabilities = [
                inference.infer_request(name, test[i : i + 1000], version, probabilities=True)
                for i in range(0, len(test) - 1000, 1000)
            ][:20]
            # The same rows as raw records (a tensor per feature), transformed by the service.
            record_singles = [
                records.infer_request(name, test_records[i : i + 1]) for i in range(1000)
            ]
            record_batches = [
                records.infer_request(name, test_records[i : i + 1000])
                for i in range(0, len(test_records) - 1000, 1000)
            ][:20]
            # Typed contents: what a client holding Python values (the gateway) would send.
            typed_batches = [
                records.infer_request(name, test_records[i : i + 1000], raw=False)
                for i in range(0, len(test_records) - 1000, 1000)
            ][:20]
            live = [pb.ServerLiveRequest()]
            results = []
            # The targets are judged on the C++ client's figures: a Python client costs about
            # as much CPU per call as the service, on the same two cores.
            judged: dict[int, dict[str, Any]] = {}
            judged_records: dict[int, dict[str, Any]] = {}
            binary = build_load_generator(scratch)
            if binary is not None:
                single_file = write_requests(scratch / "singles.bin", singles)
                record_file = write_requests(scratch / "records.bin", record_singles)
                live_file = write_requests(scratch / "live.bin", live)
                for what, method, path, into in (
                    ("ServerLive (gRPC floor)", LIVE_METHOD, live_file, None),
                    ("ModelInfer single row", INFER_METHOD, single_file, judged),
                    ("ModelInfer single raw record", INFER_METHOD, record_file, judged_records),
                ):
                    for c, run in ((1, {"count": args.count}), (16, {"seconds": args.seconds})):
                        result = load_generator(binary, address, method, path, c, **run)
                        label = f"C++ client: {what}, concurrency {c}"
                        results.append(generated_row(label, result))
                        if into is not None:
                            into[c] = result
            results += [
                row(
                    "Python client: ServerLive (gRPC floor), c 1",
                    *blocking(address, live, args.count),
                ),
                row(
                    "Python client: ServerLive (gRPC floor), c 16",
                    *asyncio.run(concurrent(address, live * 16, 16, args.seconds)),
                ),
                row(
                    "Python client: ModelInfer single row, c 1",
                    *blocking(address, singles, args.count),
                ),
                row(
                    "Python client: ModelInfer single row, c 16",
                    *asyncio.run(concurrent(address, singles, 16, args.seconds)),
                ),
            ]
            # Which input form costs the service (and the call) least: the gateway's choice.
            forms = []
            for form, requests in (
                ("rows (transformed matrix)", batches),
                ("raw records", record_batches),
                ("records, typed contents", typed_batches),
            ):
                before = service_cpu_seconds(process.pid)
                latencies, wall = blocking(address, requests, 200)
                calls = len(requests[:200]) + 200  # blocking() warms up first
                cpu_ms = 1000 * (service_cpu_seconds(process.pid) - before) / calls
                results.append(row(f"ModelInfer 1,000 {form}, labels", latencies, wall, 1000))
                forms.append(
                    f"  {form:<26} {requests[0].ByteSize():>10,} bytes  "
                    f"service CPU {cpu_ms:6.2f} ms per call"
                )
            results += [
                row(
                    "ModelInfer 1,000 rows, + probabilities",
                    *blocking(address, with_probabilities, 200),
                    1000,
                ),
            ]
            memory = peak_memory_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"\n{'call':<46} {'calls':>7} {'calls/s':>10} {'rows/s':>12} {'p50 ms':>8} {'p99 ms':>8}")
    print("\n".join(results))
    print(f"\npeak memory of the service (VmHWM): {memory:.0f} MB")
    print("\n".join(verdicts(judged, memory)))
    print("\n".join(record_verdicts(judged_records)))
    print("1,000-record calls by input form (the gateway sends the form that costs least):")
    print("\n".join(forms))
    print(
        f"load average during the run: {os.getloadavg()[0]:.2f} (2 cores, shared with the client)"
    )


if __name__ == "__main__":
    main()
