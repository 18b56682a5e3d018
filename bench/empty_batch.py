"""Benchmark (not a test): the empty-record batch attack against a running gateway.

`POST /predict/batch` with `{"features": [{}, {}, ...]}`: 20,000 empty records, about 60 KB,
far under the body limit, and the most records a batch may hold (1,000) all empty. For each,
the answer's status and size, the time to answer, and the gateway's resident memory before and
after `--attacks` of them; then single `/predict` requests of a real record, alone and while
`--attackers` clients send the 20,000-record body back to back: their p50 and p90, and the
ratio (target: the attacked p50 within 3x the quiet one; answers <= 4 KB and <= 50 ms; memory
growth <= 10 MB).

Starts its own throw-away stack, trains both models on `--rows` real rows and serves them
(bench/gateway.py's helpers). With `--before <commit>`, the same against that commit's gateway
in the same run (A/B), e.g. `--before c336e34`.

    .venv/bin/python bench/empty_batch.py [--before REF] [--rows N] [--attacks N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import before
import httpx
from _stack import data_file, throwaway_stack
from gateway import publish_and_train, system

from crimes.gateway.schemas import EXAMPLE
from crimes.local.launch import LocalProcess


def rss_mb(process: LocalProcess) -> float:
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def post(client: httpx.Client, url: str, body: bytes) -> tuple[int, int, float]:
    started = time.perf_counter()
    answer = client.post(url, content=body, headers={"content-type": "application/json"})
    return answer.status_code, len(answer.content), (time.perf_counter() - started) * 1000


def singles(client: httpx.Client, url: str, count: int) -> list[float]:
    body = json.dumps({"features": EXAMPLE}).encode()
    return [post(client, url + "/predict", body)[2] for _ in range(count)]


def quantiles(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=10)
    return f"p50 {statistics.median(values):.2f} ms, p90 {cuts[8]:.2f} ms"


def _attacker(url: str, stop: Any) -> None:
    """Sends the 20,000-empty-record body back to back until told to stop."""
    body = json.dumps({"features": [{}] * 20_000}).encode()
    with httpx.Client(timeout=120, trust_env=False) as client:
        while not stop.is_set():
            post(client, url + "/predict/batch", body)


def attack(name: str, gateway: LocalProcess, args: argparse.Namespace) -> list[str]:
    url = gateway.url
    lines = []
    with httpx.Client(timeout=120, trust_env=False) as client:
        quiet = singles(client, url, args.singles)
        for records in (20_000, 1_000):
            body = json.dumps({"features": [{}] * records}).encode()
            start_mb = rss_mb(gateway)
            answers = [post(client, url + "/predict/batch", body) for _ in range(args.attacks)]
            grown = rss_mb(gateway) - start_mb
            statuses = sorted({status for status, _, _ in answers})
            sizes = max(size for _, size, _ in answers)
            times = [ms for _, _, ms in answers]
            lines.append(
                f"{name}: {records:,} empty records ({len(body):,} bytes) x {args.attacks}: "
                f"status {statuses}, answer {sizes:,} bytes, {statistics.median(times):.1f} ms "
                f"median ({max(times):.1f} max), gateway memory {grown:+.1f} MB"
            )
        # The attackers are processes of their own: in this one they would hold its GIL
        # against the client that measures.
        stop = multiprocessing.Event()
        attackers = [
            multiprocessing.Process(target=_attacker, args=(url, stop))
            for _ in range(args.attackers)
        ]
        for process in attackers:
            process.start()
        time.sleep(1.0)
        attacked = singles(client, url, args.singles)
        stop.set()
        for process in attackers:
            process.join()
    ratio = statistics.median(attacked) / statistics.median(quiet)
    lines.append(
        f"{name}: single /predict alone {quantiles(quiet)}; while {args.attackers} clients "
        f"send the 20,000-record body {quantiles(attacked)} ({ratio:.2f}x the quiet p50)"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=data_file())
    parser.add_argument("--rows", type=int, default=30_000, help="rows of the file to train on")
    parser.add_argument("--before", help="an earlier commit to run beside this one (A/B)")
    parser.add_argument("--attacks", type=int, default=10, help="attack bodies sent in a row")
    parser.add_argument("--attackers", type=int, default=1, help="attacking client processes")
    parser.add_argument("--singles", type=int, default=100, help="single requests per phase")
    args = parser.parse_args()
    with throwaway_stack(), tempfile.TemporaryDirectory(prefix="crimes-bench-eb-") as scratch:
        folder = Path(scratch)
        publish_and_train(args.data, args.rows, 1)
        environments: dict[str, dict[str, str]] = {"gateway": {}}
        lines: list[str] = []
        with ExitStack() as running:
            if args.before:
                environments["before"] = running.enter_context(before.worktree(args.before, folder))
            for name, env in environments.items():
                with system(folder, name, env) as parts:
                    found = attack(name, parts["gateway"], args)
                print("\n".join(found), flush=True)
                lines += found
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
