from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from crimes.lake import storage
from crimes.lake.settings import LakeSettings
from crimes.lake.storage import Lake, LakeError


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(LakeSettings(root=f"file://{tmp_path}/data"))


def publish(lake: Lake, version: str, payload: bytes) -> storage.Published:
    files = storage.write_files(lake, f"sets/{version}", {"a.bin": payload, "b.bin": payload * 2})
    return storage.publish_pointer(
        lake, "sets/CURRENT.json", {"version": version, "files": {"set": files}}
    )


def test_publish_then_read_verified(lake: Lake) -> None:
    publish(lake, "v1", b"one")
    manifest = storage.read_pointer(lake, "sets/CURRENT.json")
    assert manifest["version"] == "v1"
    assert storage.read_file(lake, manifest["files"]["set"]["b.bin"]) == b"oneone"
    assert lake.list("sets/v1") == ["sets/v1/a.bin", "sets/v1/b.bin"]


def test_a_failed_publication_leaves_the_current_set(lake: Lake) -> None:
    publish(lake, "v1", b"one")
    with pytest.raises(LakeError, match="missing"):
        storage.publish_pointer(
            lake,
            "sets/CURRENT.json",
            {"version": "v2", "files": {"set": {"x": {"key": "sets/v2/x", "sha256": "0"}}}},
        )
    assert storage.read_pointer(lake, "sets/CURRENT.json")["version"] == "v1"


def test_altered_files_are_detected(lake: Lake) -> None:
    published = publish(lake, "v1", b"one")
    entry = published.manifest["files"]["set"]["a.bin"]
    lake.write_bytes(entry["key"], b"tampered")
    with pytest.raises(LakeError, match="checksum mismatch"):
        storage.read_file(lake, entry)


def test_rewriting_the_same_content_is_idempotent(lake: Lake, tmp_path: Path) -> None:
    first = publish(lake, "v1", b"one")
    stamp = (tmp_path / "data/sets/v1/a.bin").stat().st_mtime_ns
    second = publish(lake, "v1", b"one")
    assert first.manifest == second.manifest
    assert (tmp_path / "data/sets/v1/a.bin").stat().st_mtime_ns == stamp  # written once


def test_nothing_published_and_missing_keys_are_clear(lake: Lake) -> None:
    with pytest.raises(LakeError, match="nothing published yet"):
        storage.read_pointer(lake, "sets/CURRENT.json")
    with pytest.raises(LakeError, match="not in the data lake"):
        lake.read_bytes("nope")
    with pytest.raises(LakeError, match="unsupported"):
        Lake(LakeSettings(root="ftp://somewhere"))


def test_parquet_round_trip_keeps_codes_as_text() -> None:
    frame = pd.DataFrame({"iucr": ["0460", "143A"], "beat": [332, 111]})
    back = storage.read_parquet_bytes(storage.parquet_bytes(frame))
    pd.testing.assert_frame_equal(frame, back)
    assert storage.parquet_bytes(frame) == storage.parquet_bytes(frame.copy())


def test_stored_files_are_never_rewritten(lake: Lake) -> None:
    storage.write_files(lake, "sets/v1", {"model.bin": b"first pickle"}, exact=False)
    kept = storage.write_files(lake, "sets/v1", {"model.bin": b"second pickle"}, exact=False)
    assert lake.read_bytes("sets/v1/model.bin") == b"first pickle"
    assert kept["model.bin"]["sha256"] == storage.sha256(b"first pickle")
    with pytest.raises(LakeError, match="already holds different content"):
        storage.write_files(lake, "sets/v1", {"model.bin": b"second pickle"})
