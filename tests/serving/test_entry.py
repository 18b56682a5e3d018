"""The `crimes` entry point: a service process starts without rich (0.2 s of its start),
and still prints its help and usage errors; other commands keep rich's help."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import atexit, sys
def loaded():
    print("rich", sys.modules.get("rich") is not None)
    print("structlog", "structlog" in sys.modules, "httpx", "httpx" in sys.modules)
atexit.register(loaded)
sys.argv = ["crimes", *sys.argv[1:]]
from crimes.entry import main
main()
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


def test_a_service_usage_error_is_still_one_clear_message() -> None:
    done = run("serve", "dtc", "--bogus")
    assert done.returncode == 2
    assert "No such option: --bogus" in done.stderr
    assert "Traceback" not in done.stderr


def test_other_commands_keep_rich() -> None:
    done = run("--help")
    assert done.returncode == 0, done.stderr
    assert "rich True" in done.stdout
