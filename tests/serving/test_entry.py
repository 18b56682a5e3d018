"""The `crimes` entry point: a service process starts without rich (0.2 s of its start) or
the local stack's tooling, and still prints its help and usage errors; other commands keep
rich's help."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
sys.argv = ["crimes", *sys.argv[1:]]
from crimes.entry import main
try:
    main()
finally:
    if sys.argv[1:2] == ["serve"]:
        import crimes.serving.server  # what a service runs, after the entry point's choices
    print("rich", sys.modules.get("rich") is not None)
    print("structlog", "structlog" in sys.modules, "httpx", "httpx" in sys.modules)
    print("local stack", "crimes.local.stack" in sys.modules)
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60
    )


def test_a_service_process_loads_structlog_and_httpx_without_rich() -> None:
    done = run("serve", "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: crimes serve" in done.stdout
    assert "rich False" in done.stdout
    assert "structlog True httpx True" in done.stdout
    # The local stack's tooling (about 0.08 s of imports) is the `crimes stack` commands' own.
    assert "local stack False" in done.stdout


def test_the_stack_commands_load_the_local_stack() -> None:
    done = run("stack", "status", "--env")
    assert done.returncode == 0, done.stderr
    assert "local stack True" in done.stdout


def test_a_service_usage_error_is_still_one_clear_message() -> None:
    done = run("serve", "dtc", "--bogus")
    assert done.returncode == 2
    assert "No such option: --bogus" in done.stderr
    assert "Traceback" not in done.stderr


def test_other_commands_keep_rich() -> None:
    done = run("--help")
    assert done.returncode == 0, done.stderr
    assert "rich True" in done.stdout
