"""The pid records and the process-ownership checks that keep `down` from killing strangers."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from crimes.local.stack import procs
from crimes.local.stack.procs import PidStore, ProcessRecord, StackError

BASH = shutil.which("bash") or "/bin/bash"


@pytest.fixture
def store(tmp_path: Path) -> PidStore:
    return PidStore(tmp_path / "pids")


@pytest.fixture
def cleanup() -> Iterator[list[ProcessRecord]]:
    """Records started by a test; whatever is still ours afterwards is stopped."""
    records: list[ProcessRecord] = []
    yield records
    procs.stop(records, grace_seconds=1.0)


def _launch(
    store: PidStore, tmp_path: Path, name: str, script: str, cleanup: list[ProcessRecord]
) -> ProcessRecord:
    record = procs.launch(
        name,
        [BASH, "-c", script],
        env={"PATH": os.environ["PATH"]},
        log_path=tmp_path / "logs" / f"{name}.log",
        cwd=tmp_path,
        address="-",
        store=store,
    )
    cleanup.append(record)
    return record


def _wait_for(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_launched_process_is_recorded_recognised_and_stopped(
    store: PidStore, tmp_path: Path, cleanup: list[ProcessRecord]
) -> None:
    record = _launch(store, tmp_path, "sleeper", "exec sleep 60", cleanup)

    assert store.read("sleeper") == record
    assert store.running("sleeper") == record
    assert procs.is_ours(record)
    assert procs.owned_processes(record) == [record.pid]
    stat = procs.read_stat(record.pid)
    assert stat is not None
    # A new session: its children are found again through the session id.
    assert stat.sid == record.pid == stat.pgid

    assert procs.stop([record]) == ["sleeper"]
    assert not procs.is_alive(record.pid)
    assert procs.stop([record]) == []


def test_a_pid_that_started_at_another_time_is_not_ours_and_never_signalled(
    store: PidStore, tmp_path: Path, cleanup: list[ProcessRecord]
) -> None:
    record = _launch(store, tmp_path, "victim", "exec sleep 60", cleanup)
    # What a record looks like after the pid was reused by another process.
    reused = replace(record, start_ticks=record.start_ticks - 1)
    store.write(reused)

    assert not procs.is_ours(reused)
    assert procs.owned_processes(reused) == []
    assert procs.stop([reused], grace_seconds=0.2) == []
    assert procs.is_alive(record.pid)
    # A record that proves nothing is dropped; the process is left alone.
    assert store.running("victim") is None
    assert not store.path("victim").exists()
    assert procs.is_alive(record.pid)


def test_a_record_from_another_boot_is_not_ours(
    store: PidStore, tmp_path: Path, cleanup: list[ProcessRecord]
) -> None:
    record = _launch(store, tmp_path, "boot", "exec sleep 60", cleanup)
    other_boot = replace(record, boot_id="00000000-0000-0000-0000-000000000000")
    assert not procs.is_ours(other_boot)
    assert procs.owned_processes(other_boot) == []


def test_the_current_process_under_a_forged_record_is_refused() -> None:
    stat = procs.read_stat(os.getpid())
    assert stat is not None
    forged = ProcessRecord(
        name="me",
        pid=os.getpid(),
        start_ticks=stat.start_ticks + 12345,
        boot_id=procs.boot_id(),
        argv=(sys.executable,),
        address="-",
        log_path="-",
    )
    assert procs.stop([forged], grace_seconds=0.1) == []


def test_a_stale_record_of_a_dead_process_is_cleaned(
    store: PidStore, tmp_path: Path, cleanup: list[ProcessRecord]
) -> None:
    record = _launch(store, tmp_path, "quick", "exit 0", cleanup)
    _wait_for(lambda: not procs.is_alive(record.pid))
    assert store.running("quick") is None
    assert store.names() == []


def test_children_are_stopped_with_their_leader(
    store: PidStore, tmp_path: Path, cleanup: list[ProcessRecord]
) -> None:
    record = _launch(store, tmp_path, "tree", "sleep 60 & sleep 61 & wait", cleanup)
    _wait_for(lambda: len(procs.owned_processes(record)) == 3)
    members = procs.owned_processes(record)

    assert procs.stop([record]) == ["tree"]
    assert not any(procs.is_alive(pid) for pid in members)


def test_children_of_a_dead_leader_are_still_found_and_stopped(
    store: PidStore, tmp_path: Path, cleanup: list[ProcessRecord]
) -> None:
    record = _launch(store, tmp_path, "orphans", "sleep 60 & exit 0", cleanup)
    _wait_for(lambda: not procs.is_ours(record))
    orphans = procs.owned_processes(record)
    assert len(orphans) == 1
    assert orphans[0] != record.pid
    # The record is kept while something of the session lives, so `down` can still reach it.
    assert store.running("orphans") is None
    assert store.path("orphans").exists()

    assert procs.stop([record]) == ["orphans"]
    assert not procs.is_alive(orphans[0])


def test_a_process_ignoring_sigterm_is_killed_after_the_grace(
    store: PidStore, tmp_path: Path, cleanup: list[ProcessRecord]
) -> None:
    ready = tmp_path / "ready"
    record = _launch(
        store, tmp_path, "stubborn", f"trap '' TERM; touch {ready}; sleep 60 & wait", cleanup
    )
    _wait_for(ready.exists)
    started = time.monotonic()
    assert procs.stop([record], grace_seconds=0.5) == ["stubborn"]
    assert 0.5 <= time.monotonic() - started < 5
    assert procs.owned_processes(record) == []


def test_stat_parsing_survives_spaces_and_parentheses_in_the_command_name(
    tmp_path: Path,
) -> None:
    odd = tmp_path / "a b) (c"
    shutil.copy("/bin/sleep", odd)
    import subprocess

    child = subprocess.Popen([str(odd), "30"])
    try:
        stat = procs.read_stat(child.pid)
        assert stat is not None
        assert stat.state in {"R", "S", "D"}
        assert stat.start_ticks > 0
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert procs.read_stat(child.pid) is None


def test_an_unreadable_pid_file_proves_nothing(store: PidStore) -> None:
    store.directory.mkdir(parents=True)
    store.path("torn").write_text('{"name": "torn", "pid": ')
    assert store.read("torn") is None
    assert store.running("torn") is None


def test_a_process_that_exits_while_awaited_fails_the_wait_with_its_log(
    store: PidStore, tmp_path: Path, cleanup: list[ProcessRecord]
) -> None:
    record = _launch(store, tmp_path, "crasher", "echo 'boom: no config'; exit 3", cleanup)

    def exited() -> str | None:
        if procs.is_alive(record.pid):
            return None
        return f"exited {procs.exit_code(record)}: {procs.log_tail(record.log_path)}"

    with pytest.raises(StackError, match=r"exited 3: (?s:.*)boom: no config"):
        procs.wait_until(lambda: False, deadline=time.monotonic() + 10, failed=exited)


def test_wait_until_gives_up_at_the_deadline() -> None:
    started = time.monotonic()
    assert not procs.wait_until(lambda: False, deadline=started + 0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
