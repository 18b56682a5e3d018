"""Instructions the gateway executes per request, counted by callgrind: the A/B this machine's
noise cannot blur.

Timed A/Bs here move by 10-20 % from one round to the next (two identical gateways, 12 paired
rounds of 3 s: 0.86x to 1.17x per round), more than the costs being weighed. valgrind's
callgrind counts the instructions a process executes instead, the same for the same work
whatever else the machine does. Each gateway runs under callgrind with its instrumentation
off (about four times slower, not fifty) until it is warm; then it is switched on, the
counters zeroed, N requests sent one at a time, and the counters dumped. The model services
run natively: only the gateway is counted, its writer's thread included.

Counts are not time: a cache miss costs nothing here, and valgrind counts a `rep movsb` copy
per byte (libc's memcpy/memset then dominate a batch's count though they take little time), so
the figures are printed with and without them. Compared: the prediction log on (this commit),
off (this commit), and, with `--before`, an earlier commit's gateway on its own model services.
By default a window of `--batches` batches holds one flush of the log's default size, after a
warm-up that has flushed once (the first flush loads the object store's client).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import before
import httpx
from _stack import data_file, throwaway_stack
from gateway import answers, publish_and_train, serving, wait_until, write_bodies

from crimes import registry
from crimes.gateway.schemas import EXAMPLE
from crimes.local import launch
from crimes.local.launch import LocalProcess

MEMORY_COPIES = ("__memcpy", "__memmove", "__memset")


@dataclass(frozen=True)
class Count:
    system: str
    what: str
    requests: int
    instructions: int  # all of the counted processes' threads over the window
    copies: int  # of which libc's memcpy/memset (counted per byte)
    functions: Counter[str]  # each function's own instructions over the window

    def line(self) -> str:
        per = self.instructions / self.requests / 1e6
        rest = (self.instructions - self.copies) / self.requests / 1e6
        return f"{self.system:8s} {self.what:18s} {per:9.3f} {rest:12.3f}"


def callgrind_runner(folder: Path) -> list[str]:
    if subprocess.run(["which", "valgrind"], capture_output=True).returncode != 0:
        raise SystemExit("valgrind is not installed: `apt-get install -y valgrind`")
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={folder}/callgrind.%p.out",
        sys.executable,
    ]


def self_costs(dump: Path) -> Counter[str]:
    """Instructions per function (its own, not its callees') in a callgrind dump."""
    names: dict[str, str] = {}
    costs: Counter[str] = Counter()
    function, skip_next = "", False
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("fn=", "cfn=")):
            key, _, value = line.partition("=")
            match = re.match(r"\((\d+)\)(?: (.*))?", value)
            name = value
            if match:
                name = names.setdefault(match.group(1), match.group(2) or match.group(1))
            if key == "fn":
                function = name
        elif line.startswith("calls="):
            skip_next = True  # the next cost line is the callee's, inclusive
        elif line[:1].isdigit() or line[:1] in "+-*":
            fields = line.split()
            if skip_next:
                skip_next = False
            elif len(fields) >= 2:
                costs[function] += int(fields[1])
    return costs


def send(client: httpx.Client, url: str, bodies: list[str], count: int) -> None:
    for i in range(count):
        answer = client.post(
            url, content=bodies[i % len(bodies)], headers={"content-type": "application/json"}
        )
        if answer.status_code != 200:
            raise SystemExit(f"{url} answered {answer.status_code}: {answer.text[:300]}")


def count(
    system: str,
    gateway: LocalProcess,
    counted: list[LocalProcess],
    folder: Path,
    path: str,
    bodies: list[str],
    plan: tuple[int, int, float],
) -> Count:
    """Instructions the `counted` processes execute over `requests` requests to the gateway's
    `path`, after `warm` uncounted ones."""
    warm, requests, settle = plan
    pids = [str(process.process.pid) for process in counted]

    def control(*flags: str) -> None:
        for pid in pids:
            subprocess.run(["callgrind_control", *flags, pid], check=True, capture_output=True)

    with httpx.Client(timeout=600, trust_env=False) as client:
        send(client, gateway.url + path, bodies, warm)
        control("--instr=on")
        send(client, gateway.url + path, bodies, 5)
        control("--zero")
        send(client, gateway.url + path, bodies, requests)
        time.sleep(settle)  # the writer's flush of those rows, off the requests' path
        control(f"--dump={system}")
        control("--instr=off")
    costs: Counter[str] = Counter()
    for pid in pids:
        dump = max(folder.glob(f"callgrind.{pid}.out.*"), key=lambda f: f.stat().st_mtime)
        costs += self_costs(dump)
    copies = sum(v for k, v in costs.items() if k.startswith(MEMORY_COPIES))
    return Count(system, path, requests, sum(costs.values()), copies, costs)


def answering(gateway: LocalProcess) -> Callable[[], bool]:
    return lambda: answers(gateway.url, "/predict", {"features": EXAMPLE})


def against(counts: list[Count], base: str) -> Iterator[tuple[Count, Count]]:
    """Each other system's count with `base`'s count of the same kind of request."""
    reference = {c.what: c for c in counts if c.system == base}
    for counted in counts:
        other = reference.get(counted.what)
        if counted.system != base and other is not None:
            yield counted, other


def ratios(counts: list[Count], base: str) -> list[str]:
    """Each other system's count over `base`'s, per kind of request."""
    lines = []
    for counted, other in against(counts, base):
        ratio = (counted.instructions / counted.requests) / (other.instructions / other.requests)
        plain = ((counted.instructions - counted.copies) / counted.requests) / (
            (other.instructions - other.copies) / other.requests
        )
        lines.append(
            f"{counted.system} / {base}, {counted.what}: {ratio:.3f}x ({plain:.3f}x without copies)"
        )
    return lines


def differences(counts: list[Count], base: str, top: int) -> list[str]:
    """The functions whose own instructions per request differ most from `base`'s."""
    lines = []
    for counted, other in against(counts, base):
        lines.append(f"\n{counted.system} - {base}, {counted.what}: instructions per request")
        names = set(counted.functions) | set(other.functions)
        mine, theirs = counted.functions, other.functions
        change = {n: mine[n] / counted.requests - theirs[n] / other.requests for n in names}
        for name in sorted(change, key=lambda n: -abs(change[n]))[:top]:
            own = mine[name] / counted.requests
            lines.append(f"{change[name]:+12,.0f} {own:12,.0f}  {name[:110]}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=data_file())
    parser.add_argument("--rows", type=int, default=60_000, help="rows of the file; 0: all")
    parser.add_argument("--batches", type=int, default=125, help="1,000-record batches counted")
    parser.add_argument("--singles", type=int, default=2000, help="single records counted")
    parser.add_argument("--before", help="an earlier commit's gateway beside this one")
    parser.add_argument(
        "--counted",
        choices=("gateway", "services"),
        default="gateway",
        help="whose instructions: the gateway's, or its two model services' (the log then "
        "changes nothing: only log on is counted)",
    )
    parser.add_argument(
        "--functions",
        type=int,
        default=0,
        help="also print the N functions whose own instructions per request differ most",
    )
    args = parser.parse_args()
    began = time.perf_counter()
    with throwaway_stack(), tempfile.TemporaryDirectory(prefix="crimes-bench-in-") as scratch:
        folder = Path(scratch)
        publish_and_train(args.data, args.rows, trials=2)
        singles, batches, _ = write_bodies(folder, 1000, 5)
        runner = callgrind_runner(folder)
        environments = {"log on": {}, "log off": {"CRIMES_PREDICTION_LOG_ENABLED": "false"}}
        if args.counted == "services":
            del environments["log off"]
        with ExitStack() as running:
            code: dict[str, dict[str, str]] = {"this": {}}
            if args.before:
                code["before"] = running.enter_context(before.worktree(args.before, folder))
                environments["before"] = code["before"]
            services = start_services(code, folder, runner if args.counted == "services" else ())
            for started in services.values():
                for service in started:
                    running.callback(service.stop)
            gateways: dict[str, LocalProcess] = {}
            for system, env in environments.items():
                own = services["before" if system == "before" else "this"]
                gateway_runner = runner if args.counted == "gateway" else ()
                gateway = start_gateway(env, own, folder, gateway_runner)
                running.callback(gateway.stop)
                gateways[system] = gateway
            for gateway in gateways.values():
                wait_until(gateway, answering(gateway), timeout=900)
            print(f"{args.counted} ready under callgrind at {time.perf_counter() - began:.0f} s")
            counts = []
            for system, gateway in gateways.items():
                counted = [gateway]
                if args.counted == "services":
                    counted = services["before" if system == "before" else "this"]
                plans = [
                    ("/predict/batch", batches, (args.batches + 5, args.batches, 15.0)),
                    ("/predict", singles, (50, args.singles, 3.0)),
                ]
                for path, bodies, plan in plans:
                    if plan[1] == 0:
                        continue
                    lines = bodies.read_text().splitlines()
                    counts.append(count(system, gateway, counted, folder, path, lines, plan))
                    print(counts[-1].line(), flush=True)
    print()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"{args.counted}: {'system':8s} {'requests':18s} {'M instr/req':>9s} {'no copies':>12s}")
    for counted_line in counts:
        print(counted_line.line())
    base = "log on" if args.counted == "services" else "log off"
    print("\n".join(ratios(counts, base)))
    if args.before and args.counted == "gateway":
        print("\n".join(r for r in ratios(counts, "before") if r.startswith("log on")))
    if args.functions:
        print("\n".join(differences(counts, base, args.functions)))
    print(f"\nwhole bench: {time.perf_counter() - began:.0f} s")


# The periodic work of every process (model alias checks, metadata and replica refreshes,
# connection ages) is counted by time, not by request: a slower counted window (valgrind, a
# busy machine) would count more of it per request. Pushed past the windows, on both sides.
QUIET: Final = {
    "CRIMES_MODEL_POLL_INTERVAL_SECONDS": "3600",
    "CRIMES_MODEL_MAX_CONNECTION_AGE_SECONDS": "3600",
    "CRIMES_GATEWAY_REFRESH_SECONDS": "3600",
    "CRIMES_GATEWAY_MODELS_REFRESH_SECONDS": "3600",
    "CRIMES_GATEWAY_ACCURACY_REFRESH_SECONDS": "3600",
}


def start_services(
    code: dict[str, dict[str, str]], folder: Path, runner: Sequence[str]
) -> dict[str, list[LocalProcess]]:
    """Each code version's two model services (under `runner`, if given), serving."""
    services: dict[str, list[LocalProcess]] = {}
    for name, env in code.items():
        for kind in ("dtc", "lda"):
            local = {"CRIMES_MODEL_LOCAL_DIR": str(folder / f"{name}-{kind}")}
            service_env = {**QUIET, **env, **local}
            service = launch.serve(LocalProcess, kind, service_env, folder, runner=runner)
            services.setdefault(name, []).append(service)
            wait_until(service, serving(service.address, registry.MODELS[kind]), timeout=900)
    return services


def start_gateway(
    env: dict[str, str], services: list[LocalProcess], folder: Path, runner: Sequence[str]
) -> LocalProcess:
    dtc, lda = services
    gateway_env = {
        **QUIET,
        **env,
        "CRIMES_GATEWAY_DTC_ADDRESS": f"dns:///{dtc.address}",
        "CRIMES_GATEWAY_LDA_ADDRESS": f"dns:///{lda.address}",
        "CRIMES_GATEWAY_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"],
        # Calls run fifty times slower while counted; flushes come from rows, as under
        # load, not from the clock.
        "CRIMES_GATEWAY_DEADLINE_SECONDS": "120",
        "CRIMES_PREDICTION_LOG_FLUSH_SECONDS": "3600",
    }
    return launch.serve(LocalProcess, "gateway", gateway_env, folder, runner=runner)


if __name__ == "__main__":
    main()
