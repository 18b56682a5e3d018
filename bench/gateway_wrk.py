"""wrk as the load generator of bench/gateway.py: POST bodies from a file, parsed results.

The Lua script builds every request once (`wrk.format`) from a file of JSON bodies, one per
line, and sends them in turn; it defines no `response` callback (that would make wrk parse
every body and slow the client down). Non-2xx answers and socket errors are counted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = """\
-- POST the bodies of a file (one JSON document per line) in turn; built once per thread.
local requests = {}
local next_index = 0

function init(args)
  local path = args[1]
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(path) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  if #requests == 0 then
    error("no request bodies in " .. path)
  end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
"""

INSTALL_HINT = "wrk is not installed: `apt-get install -y wrk` (Debian package `wrk`)"

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


@dataclass(frozen=True)
class WrkResult:
    connections: int
    requests: int
    seconds: float
    rate: float  # requests/s
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx answers + socket errors

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.requests > 0


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(INSTALL_HINT)
    return found


def write_script(folder: Path) -> Path:
    path = folder / "post_bodies.lua"
    path.write_text(LUA)
    return path


def command(
    url: str,
    script: Path,
    bodies: Path,
    connections: int,
    seconds: float,
    threads: int = 1,
    timeout: float = 10.0,
) -> list[str]:
    return [
        require_wrk(),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        f"--timeout={timeout:g}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        str(bodies),
    ]


def run(
    url: str,
    script: Path,
    bodies: Path,
    connections: int,
    seconds: float,
    threads: int = 1,
) -> tuple[WrkResult, str]:
    """One wrk run; its parsed result and its raw output."""
    args = command(url, script, bodies, connections, seconds, threads)
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return parse(done.stdout, connections), done.stdout


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str, connections: int) -> WrkResult:
    percentiles = {
        int(m.group(1)): _duration_ms(m.group(2))
        for m in re.finditer(r"^\s+(50|90|99)%\s+(\S+)\s*$", output, re.MULTILINE)
    }
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", output, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if total is None or rate is None or len(percentiles) != 3:
        raise ValueError(f"unexpected wrk output:\n{output}")
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    return WrkResult(
        connections=connections,
        requests=int(total.group(1)),
        seconds=_duration_ms(total.group(2) + total.group(3)) / 1000,
        rate=float(rate.group(1)),
        p50_ms=percentiles[50],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        errors=errors,
    )
