"""An earlier commit of the project beside this one, for A/B benchmarks in one run: a git
worktree of that commit, whose processes run its own code (`PYTHONPATH` puts its `src/` before
the installed project) in this environment; and the two figures a model service is judged on
beyond its answers: the time from process start to SERVING on a local model, and its peak
resident memory."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from crimes import registry
from crimes.local import launch, stack
from crimes.local.launch import LocalProcess
from crimes.ops.probe import grpc_serving

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def worktree(ref: str, folder: Path) -> Iterator[dict[str, str]]:
    """The environment that runs `ref`'s code (a detached worktree, removed afterwards)."""
    path = folder / "before"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), ref],
        check=True,
        capture_output=True,
    )
    commit = subprocess.run(
        ["git", "-C", str(path), "log", "-1", "--format=%h %s"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"before: {commit[:100]}")
    entry = path / "src" / "crimes" / "entry.py"
    if not entry.exists():
        # This environment's `crimes` script calls crimes.entry:main; before it existed the
        # script called crimes.cli:app, which is what the earlier code runs.
        entry.write_text("from crimes.cli import app\n\n\ndef main() -> None:\n    app()\n")
    try:
        yield {"PYTHONPATH": str(path / "src")}
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(path, ignore_errors=True)


def peak_rss_mb(process: LocalProcess) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_seconds(kind: str, env: dict[str, str], local_dir: Path, folder: Path) -> float:
    """From process start to SERVING, on the local copy the service running the same code
    left in `local_dir` (MLflow on a closed port: its fallback path)."""
    copy = folder / f"start-{kind}-{time.monotonic_ns()}"
    shutil.copytree(local_dir, copy)
    start_env = {
        **env,
        "CRIMES_MODEL_TRACKING_URI": f"http://127.0.0.1:{stack.free_port()}",
        "CRIMES_MODEL_LOCAL_DIR": str(copy),
        "CRIMES_MODEL_USE_LAKE_BUNDLE": "false",
    }
    began = time.perf_counter()
    process = launch.serve(LocalProcess, kind, start_env, folder)
    try:
        while not grpc_serving(process.address, registry.MODELS[kind], timeout=0.5)[0]:
            process.alive()
            if time.perf_counter() - began > 120:
                raise TimeoutError(f"{kind} not serving within 120 s:\n{process.tail()}")
            time.sleep(0.01)
        return time.perf_counter() - began
    finally:
        process.stop()
        shutil.rmtree(copy, ignore_errors=True)


def spread(values: list[float]) -> str:
    """min / median / max."""
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"
