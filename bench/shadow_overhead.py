"""Benchmark (not a test): what shadow scoring costs a single-record request, A/B on one run.

Real processes: both model services, both challenger deployments (the challenger alias on the
champion's own version: what is measured is the shadow's own work, the queueing, the
challenger's transformation and call, not a second model's), and two gateways on the same
services: A without challengers, B with them at `--share` (1.0 by default: every answered
record is shadowed, the worst case). wrk POSTs real test records to `/predict` at concurrency
1, A and B in turn, `--rounds` times; the p50 of each, and B's median extra p50 judged against
the issue's 1 ms. Drift monitoring is on in both (it always is).

    .venv/bin/python bench/shadow_overhead.py [--rows N] [--seconds S] [--rounds N] [--share F]
"""

from __future__ import annotations

import statistics
import time

import gateway_wrk
from gateway import (
    ab_parser,
    answers,
    counter_total,
    serve_models,
    trained_stack,
    wait_until,
    write_bodies,
)

from crimes import registry
from crimes.gateway.schemas import EXAMPLE
from crimes.local import launch
from crimes.local.launch import LocalProcess
from crimes.settings import TrackingSettings

TARGET_EXTRA_P50_MS = 1.0


def challengers_follow_the_champions() -> None:
    import mlflow

    client = mlflow.MlflowClient(TrackingSettings().tracking_uri)
    for name in registry.MODELS.values():
        champion = client.get_model_version_by_alias(name, registry.CHAMPION).version
        client.set_registered_model_alias(name, registry.CHALLENGER, champion)


def shadowed(gateway: LocalProcess) -> float:
    return counter_total(gateway, "crimes_gateway_shadow_records_total")


def main() -> None:
    parser = ab_parser(__doc__.splitlines()[0])
    parser.add_argument("--share", type=float, default=1.0, help="gateway B's shadow share")
    args = parser.parse_args()
    with trained_stack(args, "crimes-bench-shadow-") as folder:
        challengers_follow_the_champions()
        singles, _, _ = write_bodies(folder, 1000, 1)
        script = gateway_wrk.write_script(folder)
        running: dict[str, LocalProcess] = {}
        try:
            deployments = ("dtc", "lda", "dtc-challenger", "lda-challenger")
            base = serve_models(folder, deployments, running)
            with_shadow = {
                **base,
                "CRIMES_GATEWAY_DTC_CHALLENGER_ADDRESS": f"dns:///{running['dtc-challenger'].address}",
                "CRIMES_GATEWAY_LDA_CHALLENGER_ADDRESS": f"dns:///{running['lda-challenger'].address}",
                "CRIMES_GATEWAY_SHADOW_SHARE": str(args.share),
            }  # fmt: skip
            gateways = {
                "A (no shadow)": launch.serve(LocalProcess, "gateway", base, folder),
                f"B (shadow {args.share:g})": launch.serve(
                    LocalProcess, "gateway", with_shadow, folder
                ),
            }
            running.update({f"gateway {k}": g for k, g in gateways.items()})
            body = {"features": EXAMPLE}
            for gateway in gateways.values():
                wait_until(gateway, lambda g=gateway: answers(g.url, "/predict", body))  # type: ignore[misc]
            time.sleep(3)  # the challengers' readiness, seen by B's refresh loop
            p50: dict[str, list[float]] = {name: [] for name in gateways}
            for round_ in range(1, args.rounds + 1):
                for name, gateway in gateways.items():
                    before = shadowed(gateway)
                    result, raw = gateway_wrk.run(
                        gateway.url + "/predict", script, singles, 1, args.seconds, 1
                    )
                    if not result.ok:
                        print(raw)
                    p50[name].append(result.p50_ms)
                    print(f"round {round_} {name:<18} {result.rate:>7,.0f} req/s  "
                          f"p50 {result.p50_ms:.3f} ms  p99 {result.p99_ms:.3f} ms  "
                          f"errors {result.errors}  shadowed {shadowed(gateway) - before:,.0f}",
                          flush=True)  # fmt: skip
        finally:
            for process in running.values():
                process.stop()
    a, b = (statistics.median(values) for values in p50.values())
    extra = b - a
    verdict = "MET" if extra <= TARGET_EXTRA_P50_MS else "MISSED"
    print(f"\nmedian p50: A {a:.3f} ms, B {b:.3f} ms; shadowing adds {extra:+.3f} ms at c=1 "
          f"(target <= {TARGET_EXTRA_P50_MS:g} ms): {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
