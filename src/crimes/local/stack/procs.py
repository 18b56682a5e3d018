"""Processes the stack starts: launching, pid records, ownership checks and stopping.

A pid alone is not proof that a process is ours: after a crash or a reboot the number may belong
to anything. Each record therefore keeps the kernel's start time of the process (field 22 of
/proc/<pid>/stat, in clock ticks since boot) and the boot id; a pid is only signalled when both
still match. Every process is started in a new session, so the whole tree it forks (SeaweedFS'
workers, uvicorn under `mlflow server`) is found again through its session id.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from crimes.ops.logs import get_logger

log = get_logger("crimes.local.stack")

PROC = Path("/proc")
BOOT_ID_FILE = PROC / "sys" / "kernel" / "random" / "boot_id"

# Popen handles of the processes launched by this Python process: kept so that they can be reaped
# (no zombies, no ResourceWarning) when they exit while we are still running.
_LAUNCHED: dict[int, subprocess.Popen[bytes]] = {}
_EXIT_CODES: dict[int, int] = {}


class StackError(RuntimeError):
    """A part of the stack could not be started, reached or stopped."""


@dataclass(frozen=True)
class ProcessRecord:
    """What `up` wrote down about a process it started, enough to recognise it later."""

    name: str
    pid: int
    start_ticks: int
    boot_id: str
    argv: tuple[str, ...]
    address: str
    log_path: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ProcessRecord:
        raw = json.loads(text)
        return cls(
            name=str(raw["name"]),
            pid=int(raw["pid"]),
            start_ticks=int(raw["start_ticks"]),
            boot_id=str(raw["boot_id"]),
            argv=tuple(str(a) for a in raw["argv"]),
            address=str(raw["address"]),
            log_path=str(raw["log_path"]),
        )


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str
    pgid: int
    sid: int
    start_ticks: int


def boot_id() -> str:
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return "unknown"


def read_stat(pid: int) -> ProcStat | None:
    """The fields of /proc/<pid>/stat we need, or None when there is no such process."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    return ProcStat(
        pid=pid, state=rest[0], pgid=int(rest[2]), sid=int(rest[3]), start_ticks=int(rest[19])
    )


def _reap(pid: int) -> None:
    """Collect the exit status of a child of ours, so that it does not linger as a zombie."""
    popen = _LAUNCHED.get(pid)
    if popen is not None:
        code = popen.poll()
        if code is not None:
            _EXIT_CODES[popen.pid] = code
            _LAUNCHED.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie."""
    _reap(pid)
    stat = read_stat(pid)
    return stat is not None and stat.state not in ("Z", "X")


def is_ours(record: ProcessRecord) -> bool:
    """True when record.pid is still the very process that was recorded, and it is running."""
    if record.boot_id != boot_id():
        return False
    _reap(record.pid)
    stat = read_stat(record.pid)
    return (
        stat is not None and stat.state not in ("Z", "X") and stat.start_ticks == record.start_ticks
    )


def owned_processes(record: ProcessRecord) -> list[int]:
    """Live processes of the session the recorded process leads, leader included.

    A session id cannot be handed out again while any process of that session exists, so when the
    leader has died its remaining children are still recognisable; when a process with the
    leader's pid exists but started at another time, the pid was reused and nothing is ours.
    """
    if record.boot_id != boot_id():
        return []
    _reap(record.pid)
    leader = read_stat(record.pid)
    if leader is not None and leader.start_ticks != record.start_ticks:
        return []
    members: list[int] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name))
        if (
            stat is not None
            and stat.sid == record.pid
            and stat.state not in ("Z", "X")
            and stat.start_ticks >= record.start_ticks
        ):
            members.append(stat.pid)
    return sorted(members)


class PidStore:
    """One JSON record per process under <state_dir>/pids/<name>.json."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def read(self, name: str) -> ProcessRecord | None:
        try:
            return ProcessRecord.from_json(self.path(name).read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            # A torn or hand-edited record cannot prove ownership of anything.
            log.warning("stack.pidfile_unreadable", path=str(self.path(name)))
            return None

    def write(self, record: ProcessRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(record.name)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(record.to_json())
        os.replace(tmp, target)

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def running(self, name: str) -> ProcessRecord | None:
        """The record of `name` when its process is still ours and alive; stale records go."""
        record = self.read(name)
        if record is None:
            return None
        if is_ours(record):
            return record
        if not owned_processes(record):
            self.remove(name)
        return None


def launch(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path,
    address: str,
    store: PidStore,
) -> ProcessRecord:
    """Start argv in a new session, output appended to log_path, and write its pid record."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
        out.flush()
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    stat = read_stat(popen.pid)
    if stat is None:
        popen.wait()
        raise StackError(f"{name} exited immediately (code {popen.returncode}); see {log_path}")
    _LAUNCHED[popen.pid] = popen
    _EXIT_CODES.pop(popen.pid, None)
    record = ProcessRecord(
        name=name,
        pid=popen.pid,
        start_ticks=stat.start_ticks,
        boot_id=boot_id(),
        argv=tuple(argv),
        address=address,
        log_path=str(log_path),
    )
    store.write(record)
    log.info("stack.started", part=name, pid=popen.pid, log=str(log_path))
    return record


def exit_code(record: ProcessRecord) -> int | None:
    """The exit code of a process launched by this Python process, once it has exited."""
    _reap(record.pid)
    return _EXIT_CODES.get(record.pid)


def _signal_all(record: ProcessRecord, pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        # Re-check right before signalling: between the scan and now the leader may have exited
        # and its number been reused.
        if pid == record.pid and not is_ours(record):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(records: Sequence[ProcessRecord], grace_seconds: float = 10.0) -> list[str]:
    """SIGTERM every process (and child) of each record, SIGKILL what is left after the grace.

    Returns the names of the records that had something running. Processes that are not
    provably ours are never signalled.
    """
    stopped: list[str] = []
    for record in records:
        pids = owned_processes(record)
        if pids:
            stopped.append(record.name)
            log.info("stack.stopping", part=record.name, pids=pids)
            _signal_all(record, pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    remaining = [r for r in records if owned_processes(r)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = [r for r in remaining if owned_processes(r)]
    for record in remaining:
        pids = owned_processes(record)
        log.warning("stack.killing", part=record.name, pids=pids, grace_seconds=grace_seconds)
        _signal_all(record, pids, signal.SIGKILL)
    kill_deadline = time.monotonic() + 5.0
    while remaining and time.monotonic() < kill_deadline:
        time.sleep(0.05)
        remaining = [r for r in remaining if owned_processes(r)]
    if remaining:
        left = {r.name: owned_processes(r) for r in remaining}
        raise StackError(f"processes survived SIGKILL: {left}")
    for record in records:
        _reap(record.pid)
    return stopped


def log_tail(path: Path | str, lines: int = 40) -> str:
    try:
        with Path(path).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16_384))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: Callable[[], bool],
    *,
    deadline: float,
    failed: Callable[[], str | None] = lambda: None,
    interval: float = 0.1,
) -> bool:
    """Poll check() until it is true or the monotonic deadline passes.

    failed() is asked between polls and stops the wait early with its reason (e.g. the process
    has exited), raised as StackError.
    """
    while True:
        if check():
            return True
        reason = failed()
        if reason is not None:
            raise StackError(reason)
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 0.5)
