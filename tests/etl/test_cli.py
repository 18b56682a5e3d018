"""`crimes etl` as a user meets it: a mistake is one clear line and a non-zero exit (2 for
bad input), never a traceback; nothing is stored in the data lake for input that is refused."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from crimes.local.launch import CRIMES
from crimes.local.portal_double import admitting
from crimes.local.stack import free_port


def run_etl(source: str, lake: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CRIMES_LAKE_ROOT": f"file://{lake}/data",
        "CRIMES_MAX_ATTEMPTS": "1",
        "CRIMES_SOURCE_FOLDER": str(lake.parent),
        **admitting(),
    }
    return subprocess.run(
        [CRIMES, "etl", "--source", source],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=lake.parent,
    )  # fmt: skip


def said(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What the command told the user: stderr without its structured (JSON) log lines."""
    return [line for line in result.stderr.splitlines() if not line.startswith("{")]


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        ("a,b\n1,2\n", 2, "not Chicago crime records: missing the columns id, date, iucr"),
        ("ID,Date,IUCR\n1,01/01/2024 10:00:00 AM,0460\n", 2, "missing the columns primary_type"),
        (None, 2, "source file not found"),
        ("\x00\x01 not text", 2, "returned no rows"),
        ("\x00\x01,x\n\xff,1\n2,3\n", 2, "missing the columns"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, content: str | None, code: int, message: str
) -> None:
    source = tmp_path / "crimes.csv"
    if content is not None:
        source.write_text(content)
    result = run_etl(str(source), tmp_path / "lake")
    assert result.returncode == code, result.stderr
    assert len(said(result)) == 1, result.stderr
    assert said(result)[0].startswith("crimes etl: ")
    assert message in said(result)[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "lake" / "data").exists()  # nothing stored


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/etc/hostname", "is not under"),
        ("file:///etc/hostname", "is not under"),
        ("{folder}/../../etc/hostname", "is not under"),
        ("http://169.254.169.254/latest/meta-data", "host '169.254.169.254' is not allowed"),
        ("https://example.org", "host 'example.org' is not allowed"),
        ("https://user:secret@127.0.0.1:1", "credentials in the URL are refused"),
        ("ftp://127.0.0.1/crimes.csv", "unsupported source"),
    ],
)
def test_a_source_the_policy_refuses_is_one_line_and_exit_2(
    tmp_path: Path, source: str, message: str
) -> None:
    """Refused before any request or read: the settings allow the double's loopback host and
    this test's folder only."""
    result = run_etl(source.format(folder=tmp_path), tmp_path / "lake")
    assert result.returncode == 2, result.stderr
    assert len(said(result)) == 1, result.stderr
    assert message in said(result)[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "lake" / "data").exists()


def test_an_unreachable_source_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run_etl(f"http://127.0.0.1:{free_port()}", tmp_path / "lake")
    assert result.returncode == 1, result.stderr
    assert len(said(result)) == 1, result.stderr
    assert "connection error" in said(result)[0]
    assert "Traceback" not in result.stderr
    json.loads(result.stderr.splitlines()[0])  # the logs stay structured
