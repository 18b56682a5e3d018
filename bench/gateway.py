"""Benchmark (not a test): the gateway's `POST /predict` and `/predict/batch` under wrk, beside
an in-process baseline shaped like the reference implementation, in one run on real services.

1. A throw-away stack (SeaweedFS S3 + MLflow on PostgreSQL); the ETL on real 2024 rows (the first
   `--rows` of the file through the portal double; `--rows 0`: the whole file); both models
   trained, registered and promoted (`--trials` Optuna trials, 2-fold CV).
2. Real processes: `crimes serve dtc`, `crimes serve lda`, `crimes serve gateway`, and the
   baseline (bench/gateway_baseline.py: one uvicorn worker that builds a pandas DataFrame per
   request, runs the fitted scikit-learn pipeline and both models' `predict` in-process).
3. wrk (Debian package `wrk`) POSTs real test records (1,000 distinct ones, in turn) to
   `/predict` at 1, 8 and 32 connections, and 1,000-record batches to `/predict/batch`, against
   both systems, ~10 s per point; requests/s, p50/p90/p99, and each server process's CPU use.

Targets on this 2-core machine for the gateway: p50 <= 2 ms at concurrency 1, >= 1,500
requests/s at concurrency 32, >= 50,000 rows/s in 1,000-record batches. The load generator
shares the two cores with the servers (and the gateway with both model services).

    .venv/bin/python bench/gateway.py [--rows N] [--trials N] [--seconds S]

A/B against an earlier commit in the same run (its code from a git worktree, its own model
services and gateway beside this commit's, each point on both in turn, `--rounds` times):

    .venv/bin/python bench/gateway.py --before <commit> --rounds 3 --skip-baseline

In that A/B each round also sends single records at concurrency 1 to both gateways from one
client, each record to each in turn (bench/interleaved.py): run one after the other, two c=1
figures differ by more than the code does, as this machine's speed drifts within a minute.

It also reports each system's model services: peak resident memory after the runs, and the time
from process start to SERVING on the local copy each left (MLflow unreachable: the fallback).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import before
import gateway_wrk
import httpx
import interleaved
from _stack import data_file, throwaway_stack
from gateway_wrk import WrkResult

from crimes import registry
from crimes.gateway.schemas import EXAMPLE
from crimes.lake import datasets
from crimes.lake.storage import Lake
from crimes.local import launch, stack
from crimes.local.launch import LocalProcess
from crimes.ops.probe import grpc_serving
from crimes.settings import TrackingSettings

YEAR = 2024
BENCH = Path(__file__).resolve().parent

TARGET_P50_MS = 2.0
TARGET_RATE_C32 = 1_500.0
TARGET_BATCH_ROWS = 50_000.0


def counter_total(gateway: LocalProcess, name: str, label: str = "") -> float:
    """A counter's value summed over its labels (those samples naming `label` only, if
    given), from the gateway's own metrics port."""
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    text = httpx.get(url, timeout=10, trust_env=False).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and label in line
    )


def ab_parser(description: str) -> argparse.ArgumentParser:
    """The options every A/B benchmark of two gateways takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default=data_file())
    parser.add_argument("--rows", type=int, default=40_000, help="rows of the file; 0: all")
    parser.add_argument("--seconds", type=float, default=8.0, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs")
    return parser


@contextmanager
def trained_stack(args: argparse.Namespace, prefix: str) -> Iterator[Path]:
    """A throw-away stack with both models trained on `args.rows` rows, and a scratch folder."""
    gateway_wrk.require_wrk()
    with throwaway_stack(), tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        publish_and_train(args.data, args.rows, trials=2)
        yield Path(scratch)


def serve_models(
    folder: Path, deployments: tuple[str, ...], running: dict[str, LocalProcess]
) -> dict[str, str]:
    """The model deployments started (into `running`) and healthy; a gateway's settings aimed
    at dtc and lda."""
    for deployment in deployments:
        running[deployment] = launch.serve(LocalProcess, deployment, {}, folder)
    for service in running.values():
        service.wait_healthy()
    return {
        "CRIMES_GATEWAY_TRACKING_URI": TrackingSettings().tracking_uri,
        "CRIMES_GATEWAY_DTC_ADDRESS": f"dns:///{running['dtc'].address}",
        "CRIMES_GATEWAY_LDA_ADDRESS": f"dns:///{running['lda'].address}",
    }


def wait_until(what: LocalProcess, ready: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        what.alive()
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what.kind} not ready within {timeout:.0f} s:\n{what.tail()}")


def answers(url: str, path: str, body: dict[str, Any]) -> bool:
    return httpx.post(url + path, json=body, timeout=10, trust_env=False).status_code == 200


def serving(address: str, name: str) -> Callable[[], bool]:
    return lambda: grpc_serving(address, name, timeout=1.0)[0]


@contextmanager
def system(folder: Path, name: str, env: dict[str, str]) -> Iterator[dict[str, LocalProcess]]:
    """One system: both model services and the gateway, running the code `env` names (this
    commit's by default), ready; all stopped on the way out."""
    with ExitStack() as started:
        running: dict[str, LocalProcess] = {}

        def started_as(kind: str, process: LocalProcess) -> LocalProcess:
            running[kind] = process
            started.callback(process.stop)
            return process

        for kind in ("dtc", "lda"):
            local = {"CRIMES_MODEL_LOCAL_DIR": str(folder / f"{name}-{kind}")}
            started_as(kind, launch.serve(LocalProcess, kind, {**env, **local}, folder))
        for kind in ("dtc", "lda"):
            wait_until(running[kind], serving(running[kind].address, registry.MODELS[kind]))
        gateway_env = {
            **env,
            "CRIMES_GATEWAY_DTC_ADDRESS": f"dns:///{running['dtc'].address}",
            "CRIMES_GATEWAY_LDA_ADDRESS": f"dns:///{running['lda'].address}",
            "CRIMES_GATEWAY_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
        }
        gateway = started_as("gateway", launch.serve(LocalProcess, "gateway", gateway_env, folder))
        # The first answers wait for the transformation to be fetched: warm it.
        wait_until(gateway, lambda: answers(gateway.url, "/predict", {"features": EXAMPLE}))
        yield running


@contextmanager
def baseline_system(folder: Path) -> Iterator[LocalProcess]:
    """The in-process baseline shaped like the reference implementation."""
    port = stack.free_port()
    argv = [sys.executable, str(BENCH / "gateway_baseline.py"), "--port", str(port)]
    process = launch.start(LocalProcess, "baseline", argv, port, folder, {})
    try:
        wait_until(process, lambda: answers(process.url, "/predict", {"features": EXAMPLE}))
        yield process
    finally:
        process.stop()


def publish_and_train(data: str, rows: int, trials: int) -> None:
    from crimes.etl import pipeline as etl
    from crimes.etl.settings import EtlSettings
    from crimes.local.portal_double import PortalDouble
    from crimes.training import pipeline as training
    from crimes.training.settings import TrainingSettings

    started = time.perf_counter()
    with PortalDouble(data, rows=rows or None) as portal:
        os.environ.update(portal.admitted)
        manifest = etl.run_etl(EtlSettings(source=portal.url, year=YEAR), Lake())
    print(
        f"ETL: {manifest['rows']['train']:,} train / {manifest['rows']['test']:,} test rows, "
        f"{time.perf_counter() - started:.1f} s"
    )
    started = time.perf_counter()
    summaries = training.run_training(TrainingSettings(year=YEAR, trials=trials, cv_folds=2))
    for summary in summaries:
        f1 = summary.metrics.get("test_f1_weighted", float("nan"))
        print(f"trained {summary.name} v{summary.version}: test F1 {f1:.4f}, "
              f"promoted={summary.promoted} ({summary.reason})")  # fmt: skip
        if not summary.promoted:
            raise SystemExit(f"{summary.name} has no champion: nothing to serve")
    print(f"training: {time.perf_counter() - started:.1f} s ({trials} trials, 2-fold CV)")


def write_bodies(folder: Path, batch_size: int, batches: int) -> tuple[Path, Path, int]:
    """Real test records as request bodies: single records, and batches; the batch row count."""
    test = datasets.load_final(Lake(), YEAR).features_test
    # to_json writes NaN as null, numpy scalars as JSON numbers and booleans as true/false.
    records: list[dict[str, Any]] = json.loads(test.to_json(orient="records", double_precision=15))
    if not records:
        raise SystemExit("the published test split is empty")
    singles = folder / "singles.jsonl"
    singles.write_text("".join(json.dumps({"features": r}) + "\n" for r in records[:1000]))
    wanted = batch_size * batches
    pool = (records * (wanted // len(records) + 1))[:wanted]
    many = folder / "batches.jsonl"
    many.write_text(
        "".join(
            json.dumps({"features": pool[i : i + batch_size]}) + "\n"
            for i in range(0, wanted, batch_size)
        )
    )
    return singles, many, batch_size


def agreement(gateway: str, baseline: str, bodies: Path) -> str:
    """Whether both systems answer the same codes for the first batch of real records."""
    body = json.loads(bodies.read_text().splitlines()[0])
    with httpx.Client(timeout=60, trust_env=False) as client:
        ours = client.post(gateway + "/predict/batch", json=body)
        theirs = client.post(baseline + "/predict/batch", json=body)
    if ours.status_code != 200 or theirs.status_code != 200:
        return f"batch answers: gateway {ours.status_code}, baseline {theirs.status_code}"
    same = sum(a == b for a, b in zip(ours.json(), theirs.json(), strict=True))
    return f"gateway and baseline agree on {same:,} of {len(body['features']):,} records"


@dataclass(frozen=True)
class Point:
    system: str
    what: str
    result: WrkResult
    rows_per_request: int
    cpu: dict[str, float]  # process name -> CPU % of one core during the run


def measure(
    system: str,
    what: str,
    url: str,
    bodies: Path,
    connections: int,
    rows_per_request: int,
    watched: list[LocalProcess],
    script: Path,
    args: argparse.Namespace,
) -> Point:
    for process in watched:
        process.alive()
    before = {p.kind: p.cpu_seconds() for p in watched}
    result, raw = gateway_wrk.run(url, script, bodies, connections, args.seconds, args.threads)
    cpu = {
        p.kind: 100 * (p.cpu_seconds() - before[p.kind]) / max(result.seconds, 1e-9)
        for p in watched
    }
    point = Point(system, what, result, rows_per_request, cpu)
    print(f"  {system:<8} {what:<28} {line(point)}", flush=True)
    if not result.ok:
        print(raw)
    return point


def line(point: Point) -> str:
    r = point.result
    return (
        f"{r.rate:>9,.0f} req/s  {r.rate * point.rows_per_request:>9,.0f} rows/s  "
        f"p50 {r.p50_ms:7.2f}  p90 {r.p90_ms:7.2f}  p99 {r.p99_ms:7.2f} ms  errors {r.errors}"
    )


def table(points: list[Point]) -> str:
    rows = [
        "| system | load | requests/s | rows/s | p50 ms | p90 ms | p99 ms | errors "
        "| server CPU (% of one core) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in points:
        r = p.result
        cpu = ", ".join(f"{name} {value:.0f}" for name, value in p.cpu.items())
        rows.append(
            f"| {p.system} | {p.what} | {r.rate:,.0f} | {r.rate * p.rows_per_request:,.0f} "
            f"| {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {cpu} |"
        )
    return "\n".join(rows)


def verdicts(points: list[Point]) -> list[str]:
    def results(system: str, prefix: str) -> list[Point]:
        return [p for p in points if p.system == system and (p.what + " ").startswith(prefix)]

    single_c1 = statistics.median(p.result.p50_ms for p in results("gateway", "/predict c=1 "))
    single_c32 = statistics.median(p.result.rate for p in results("gateway", "/predict c=32 "))
    batches = results("gateway", "/predict/b")
    batch_rows = statistics.median(p.result.rate * p.rows_per_request for p in batches)

    def verdict(held: bool) -> str:
        return "MET" if held else "MISSED"

    return [
        f"gateway p50 at concurrency 1: {single_c1:.2f} ms "
        f"(target <= {TARGET_P50_MS:g} ms): {verdict(single_c1 <= TARGET_P50_MS)}",
        f"gateway requests/s at concurrency 32: {single_c32:,.0f} "
        f"(target >= {TARGET_RATE_C32:,.0f}): {verdict(single_c32 >= TARGET_RATE_C32)}",
        f"gateway batch rows/s: {batch_rows:,.0f} (target >= {TARGET_BATCH_ROWS:,.0f}): "
        f"{verdict(batch_rows >= TARGET_BATCH_ROWS and all(p.result.ok for p in batches))}",
    ]


def comparison(points: list[Point]) -> list[str]:
    """This commit against the earlier one, point by point: min / median / max of the rounds."""

    def values(system: str, prefix: str, what: Callable[[Point], float]) -> list[float]:
        return [what(p) for p in points if p.system == system and (p.what + " ").startswith(prefix)]

    lines = []
    for label, prefix, what in (
        ("/predict c=1 p50 ms", "/predict c=1 ", lambda p: p.result.p50_ms),
        ("/predict c=32 requests/s", "/predict c=32 ", lambda p: p.result.rate),
        ("/predict/batch rows/s", "/predict/b", lambda p: p.result.rate * p.rows_per_request),
    ):
        now, then = values("gateway", prefix, what), values("before", prefix, what)
        ratio = statistics.median(now) / statistics.median(then)
        lines.append(
            f"{label}: this commit {before.spread(now)}, before {before.spread(then)} "
            f"(min / median / max of {len(now)} rounds; medians {ratio:.2f}x)"
        )
    return lines


def interleave(
    urls: dict[str, str],
    systems: dict[str, dict[str, LocalProcess]],
    singles: Path,
    seconds: float,
    p50: dict[str, list[float]],
) -> None:
    """c=1 on every system at once, each record to each in turn (bench/interleaved.py): the
    latencies of both sides from the same seconds of the machine."""
    run = interleaved.run({name: urls[name] for name in systems}, "/predict", singles, seconds)
    for name, latencies in run.items():
        p50[name].append(latencies.p50_ms)
        print(f"  {name:<8} /predict c=1 interleaved         p50 {latencies.p50_ms:7.2f} ms  "
              f"({len(latencies.seconds):,} requests, errors {latencies.errors})",
              flush=True)  # fmt: skip


def model_services(
    systems: dict[str, dict[str, LocalProcess]],
    environments: dict[str, dict[str, str]],
    folder: Path,
    rounds: int,
) -> list[str]:
    """Each system's model services: peak memory after the runs, and start to SERVING on the
    local copy each left (min / median / max of `rounds` starts)."""
    lines = []
    for name, running in systems.items():
        for kind in ("dtc", "lda"):
            rss = before.peak_rss_mb(running[kind])
            local = folder / f"{name}-{kind}"
            starts = [
                before.start_seconds(kind, environments[name], local, folder) for _ in range(rounds)
            ]
            lines.append(
                f"{name} {kind} service: peak RSS {rss:.0f} MB after the runs; start to "
                f"SERVING on its local copy {before.spread(starts)} s"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=data_file())
    parser.add_argument("--rows", type=int, default=60_000, help="rows of the file; 0: all")
    parser.add_argument("--trials", type=int, default=2, help="Optuna trials of the DTC")
    parser.add_argument("--seconds", type=float, default=10.0, help="per wrk run")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (-t)")
    parser.add_argument("--connections", default="1,8,32", help="single-record points")
    parser.add_argument("--batch-connections", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--before", help="an earlier commit to run beside this one (A/B), e.g. HEAD~5"
    )
    parser.add_argument("--rounds", type=int, default=1, help="every point this many times")
    args = parser.parse_args()
    gateway_wrk.require_wrk()  # before minutes of setup
    began = time.perf_counter()
    points: list[Point] = []
    with throwaway_stack(), tempfile.TemporaryDirectory(prefix="crimes-bench-gw-") as scratch:
        folder = Path(scratch)
        publish_and_train(args.data, args.rows, args.trials)
        singles, batches, batch_rows = write_bodies(folder, args.batch_size, 5)
        script = gateway_wrk.write_script(folder)
        with ExitStack() as running:
            environments: dict[str, dict[str, str]] = {"gateway": {}}
            if args.before:
                environments["before"] = running.enter_context(before.worktree(args.before, folder))
            systems = {
                name: running.enter_context(system(folder, name, env))
                for name, env in environments.items()
            }
            urls = {name: parts["gateway"].url for name, parts in systems.items()}
            watched = {
                name: [parts[k] for k in ("gateway", "dtc", "lda")]
                for name, parts in systems.items()
            }
            if not args.skip_baseline:
                baseline = running.enter_context(baseline_system(folder))
                urls["baseline"], watched["baseline"] = baseline.url, [baseline]
                print(agreement(urls["gateway"], baseline.url, batches))
            print(f"servers ready at {time.perf_counter() - began:.0f} s; example wrk run:")
            example = gateway_wrk.command(
                urls["gateway"] + "/predict", script, singles, 32, args.seconds, args.threads
            )
            print("  " + shlex.join(example))
            jobs = [
                (f"/predict c={c}", "/predict", singles, c, 1)
                for c in (int(c) for c in args.connections.split(","))
            ] + [
                (f"/predict/batch {batch_rows:,} rows c={args.batch_connections}",
                 "/predict/batch", batches, args.batch_connections, batch_rows)
            ]  # fmt: skip
            # Round by round, each point on every system in turn (which goes first alternates
            # from round to round): a slower minute of the machine weighs on both sides alike.
            interleaved_p50: dict[str, list[float]] = {name: [] for name in systems}
            for round_ in range(args.rounds):
                order = list(urls) if round_ % 2 == 0 else list(urls)[::-1]
                for what, path, bodies, connections, rows in jobs:
                    for name in order:
                        points.append(
                            measure(name, what, urls[name] + path, bodies, connections, rows,
                                    watched[name], script, args)
                        )  # fmt: skip
                if args.before:
                    interleave(urls, systems, singles, args.seconds, interleaved_p50)
            services_lines = model_services(systems, environments, folder, max(args.rounds, 3))
    print()
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else "python"
    print(f"command: {shlex.join([python, *sys.argv])}  "
          f"(wrk -t{args.threads}, {args.seconds:g} s per point; client and servers share "
          f"{os.cpu_count()} cores)")  # fmt: skip
    print()
    print(table(points))
    print()
    print("\n".join(verdicts(points)))
    if args.before:
        print("\n".join(comparison(points)))
        ours, theirs = interleaved_p50["gateway"], interleaved_p50["before"]
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(f"/predict c=1 p50 ms, interleaved (one client, each record to both in turn): "
              f"this commit {before.spread(ours)}, before {before.spread(theirs)} (min / median "
              f"/ max of {len(ours)} rounds; medians {ratio:.2f}x)")  # fmt: skip
    print("\n".join(services_lines))
    print(f"\nwhole bench: {time.perf_counter() - began:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.2f} (over 2 means other work shared the cores)")  # fmt: skip


if __name__ == "__main__":
    main()
