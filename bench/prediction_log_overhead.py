"""Benchmark (not a test): what the prediction log costs the answers, A/B on one run.

Real processes: both model services and two gateways on them, A with the prediction log off,
B with it on (its defaults: the log written to the stack's SeaweedFS by its thread, the model
services asked for each row's confidence), `--rounds` times:
- wrk POSTs 1,000 real test records to `/predict/batch` (closed loop at `--connections`), on
  A and on B in turn (which side goes first alternates from round to round);
- single records go to `/predict` at concurrency 1 from one client that sends each record to
  A and to B in turn (bench/interleaved.py): both sides' latencies come from the same seconds
  of the machine, whose speed drifts more within a minute than the log costs.
Printed: each run, then B against A, judged against the issue's 5 % (batch rows/s, c=1 p50)
on the median of the rounds' own B/A ratios (`report`).

    .venv/bin/python bench/prediction_log_overhead.py [--rows N] [--seconds S] [--rounds N]
        [--back-to-back] [--variant NAME:KEY=VALUE[,KEY=VALUE]]...

`--back-to-back` leaves out the c=1 phases: the batch windows follow each other, so the
log's writer (at the lowest CPU priority) has no idler seconds to flush in, and its whole
cost falls on the batch figures (sustained saturation, not bursts).

`--variant` adds a gateway with the log on and settings of its own (e.g. `"C nice 0:
CRIMES_PREDICTION_LOG_WRITER_NICE=0"`), measured in the same rounds and judged against A like
B: two settings of the log compared on the same seconds of the machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import gateway_wrk
import interleaved
from gateway import (
    ab_parser,
    answers,
    counter_total,
    serve_models,
    trained_stack,
    wait_until,
    write_bodies,
)

from crimes.gateway.schemas import EXAMPLE
from crimes.local import launch
from crimes.local.launch import LocalProcess

BUDGET = 0.05
LOGGED = "crimes_prediction_log_rows_total"
DROPPED = 'outcome="dropped"'


def main() -> None:
    parser = ab_parser(__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2, help="batch concurrency")
    parser.add_argument(
        "--back-to-back",
        action="store_true",
        help="batch windows only, one right after the other (no c=1 phase between rounds): "
        "the log's writer then has no idle time to flush in",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        type=variant,
        help="NAME:KEY=VALUE[,KEY=VALUE]: one more gateway, the log on with these settings",
    )
    args = parser.parse_args()
    with trained_stack(args, "crimes-bench-log-") as folder:
        singles, batches, rows = write_bodies(folder, 1000, 20)
        script = gateway_wrk.write_script(folder)
        running: dict[str, LocalProcess] = {}
        try:
            base = serve_models(folder, ("dtc", "lda"), running)
            base["CRIMES_GATEWAY_MAX_BATCH_RECORDS"] = "1000"
            gateways = {
                "A (log off)": launch.serve(
                    LocalProcess,
                    "gateway",
                    {**base, "CRIMES_PREDICTION_LOG_ENABLED": "false"},
                    folder,
                ),
                "B (log on)": launch.serve(LocalProcess, "gateway", base, folder),
            }
            for name, settings in args.variant:
                gateways[name] = launch.serve(LocalProcess, "gateway", {**base, **settings}, folder)
            running.update({f"gateway {k}": g for k, g in gateways.items()})
            for gateway in gateways.values():

                def ready(url: str = gateway.url) -> bool:
                    return answers(url, "/predict", {"features": EXAMPLE})

                wait_until(gateway, ready)
            time.sleep(2)
            models = [running["dtc"], running["lda"]]
            # CPU per 1,000 rows served (gateway + both model services), from /proc: steady
            # where wall-clock rates swing with the machine's steal time.
            cpu: dict[str, list[float]] = {name: [] for name in gateways}
            rate: dict[str, list[float]] = {name: [] for name in gateways}
            p50: dict[str, list[float]] = {name: [] for name in gateways}
            for round_ in range(1, args.rounds + 1):
                # A, B in turn, then B, A (with variants, each round one further on): no side
                # always runs on the later seconds.
                names, turn = list(gateways), (round_ - 1) % len(gateways)
                order = names[turn:] + names[:turn]
                for name in order:
                    gateway = gateways[name]
                    spent = [p.cpu_seconds() for p in (gateway, *models)]
                    batch, raw = gateway_wrk.run(
                        gateway.url + "/predict/batch", script, batches, args.connections,
                        args.seconds, args.connections,
                    )  # fmt: skip
                    used = [
                        p.cpu_seconds() - s for p, s in zip((gateway, *models), spent, strict=True)
                    ]
                    if not batch.ok:
                        print(raw)
                    served = batch.requests * rows / 1000
                    cpu[name].append(sum(used) / served * 1000)
                    rate[name].append(batch.rate * rows)
                    print(f"round {round_} {name:<12} batch {batch.rate * rows:>9,.0f} rows/s  "
                          f"CPU {cpu[name][-1]:.2f} ms/1,000 rows (gateway "
                          f"{used[0] / served * 1000:.2f})", flush=True)  # fmt: skip
                if args.back_to_back:
                    continue
                # c=1: one client sends each record to both gateways in turn (interleaved.py).
                urls = {name: gateway.url for name, gateway in gateways.items()}
                singles_run = interleaved.run(urls, "/predict", singles, args.seconds)
                for name, latencies in singles_run.items():
                    p50[name].append(latencies.p50_ms)
                    logged = counter_total(gateways[name], LOGGED)
                    # Rows past the log's memory bound (a writer that fell behind): none
                    # expected; the figures would flatter the log otherwise.
                    dropped = counter_total(gateways[name], LOGGED, DROPPED)
                    print(f"round {round_} {name:<12} c=1 p50 {latencies.p50_ms:.3f} ms "
                          f"({len(latencies.seconds):,} requests, interleaved, errors "
                          f"{latencies.errors})  logged {logged:,.0f}, dropped {dropped:,.0f}",
                          flush=True)  # fmt: skip
            for name, gateway in list(gateways.items())[1:]:
                dropped = counter_total(gateway, LOGGED, DROPPED)
                print(f"{name}'s log: {counter_total(gateway, LOGGED):,.0f} rows, "
                      f"dropped {dropped:,.0f}")  # fmt: skip
        finally:
            for process in running.values():
                process.stop()
    report(rate, cpu, p50)


def variant(text: str) -> tuple[str, dict[str, str]]:
    """`NAME:KEY=VALUE[,KEY=VALUE]` as the gateway's name and settings."""
    name, _, pairs = text.partition(":")
    settings = dict(pair.split("=", 1) for pair in pairs.split(",") if "=" in pair)
    if not name or not settings:
        raise argparse.ArgumentTypeError(f"not NAME:KEY=VALUE[,KEY=VALUE]: {text!r}")
    return name, settings


def report(
    rate: dict[str, list[float]], cpu: dict[str, list[float]], p50: dict[str, list[float]]
) -> None:
    """Each gateway with the log on against A, judged on the median of the rounds' own ratios
    (each round's gateways ran within seconds of each other: a paired figure, which the
    machine's drift from one round to the next does not move), with the ratio of the medians
    beside it."""
    measures = (
        ("batch rows/s", rate, -1),
        ("CPU per batch row", cpu, 1),
        ("c=1 p50", p50, 1),
    )
    off, *logged = rate
    for name in logged:
        for what, values, worse in measures:
            if not values[name]:  # not measured (--back-to-back: no c=1 phase)
                continue
            a, b = values[off], values[name]
            ratios = [after / before for before, after in zip(a, b, strict=True)]
            change = statistics.median(ratios) - 1
            of_medians = statistics.median(b) / statistics.median(a) - 1
            verdict = "MET" if change * worse <= BUDGET else "MISSED"
            rounds = ", ".join(f"{r - 1:+.1%}" for r in ratios)
            print(f"{name} against {off}, {what}: {change:+.1%} (median of the rounds' "
                  f"ratios: {rounds}; ratio of the medians {of_medians:+.1%}); budget "
                  f"{BUDGET:.0%} worse: {verdict}")  # fmt: skip
    for name in rate:
        c1 = statistics.median(p50[name]) if p50[name] else math.nan
        print(f"medians, {name}: batch {statistics.median(rate[name]):,.0f} rows/s, CPU "
              f"{statistics.median(cpu[name]):.2f} ms per 1,000 rows, c=1 p50 "
              f"{c1:.3f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
