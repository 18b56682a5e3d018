"""The data lake: one code path for `s3://` (any S3 API, through s3fs) and `file://` (a folder).

Publishing is atomic for readers: a set of files is written under a content-addressed prefix,
checked, and only then made visible by writing one small pointer object (one PUT on S3, one
rename on a folder). A reader follows the pointer and verifies every file's SHA-256, so it sees
the previous set or the new one, never half of one. Writing the same content again writes the
same paths and the same bytes: reruns are idempotent.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import fsspec

from crimes.lake.settings import LakeSettings, lake_settings

if TYPE_CHECKING:  # pandas is imported where frames are read: the services never load it
    import pandas as pd


class LakeError(RuntimeError):
    """The data lake cannot give what was asked: missing, unreadable or corrupted."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Lake:
    def __init__(self, settings: LakeSettings | None = None) -> None:
        self.settings = settings or lake_settings()
        self.root = self.settings.root.rstrip("/")
        scheme = urlparse(self.root).scheme or "file"
        if scheme == "s3":
            client_kwargs: dict[str, Any] = {"region_name": self.settings.s3_region}
            if self.settings.s3_endpoint_url:
                client_kwargs["endpoint_url"] = self.settings.s3_endpoint_url
            self.fs: fsspec.AbstractFileSystem = fsspec.filesystem(
                "s3",
                key=_secret(self.settings.s3_access_key),
                secret=_secret(self.settings.s3_secret_key),
                client_kwargs=client_kwargs,
                config_kwargs={"s3": {"addressing_style": "path"}},
                # A listing cached across writes would hide a freshly published pointer.
                use_listings_cache=False,
            )
        elif scheme == "file":
            self.fs = fsspec.filesystem("file", auto_mkdir=True)
        else:
            raise LakeError(f"unsupported data lake root {self.root!r}: use s3:// or file://")
        self.scheme = scheme

    def url(self, key: str) -> str:
        return f"{self.root}/{key.lstrip('/')}"

    def _path(self, key: str) -> str:
        url = self.url(key)
        return url.removeprefix("file://") if self.scheme == "file" else url

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if self.scheme == "file":
            # A rename is atomic on one file system: readers never see a partial file.
            temporary = f"{path}.tmp-{uuid.uuid4().hex}"
            self.fs.pipe_file(temporary, data)
            self.fs.mv(temporary, path)
        else:
            self.fs.pipe_file(path, data)

    def read_bytes(self, key: str) -> bytes:
        try:
            data = self.fs.cat_file(self._path(key))
        except FileNotFoundError as error:
            raise LakeError(f"not in the data lake: {self.url(key)}") from error
        assert isinstance(data, bytes)
        return data

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def list(self, prefix: str) -> list[str]:
        """Keys of every file under a prefix, relative to the lake root."""
        base = self._path(prefix).rstrip("/")
        if not self.fs.exists(base):
            return []
        root = self._path("").rstrip("/")
        found = self.fs.find(base)
        return sorted(str(p).removeprefix(root.removeprefix("s3://")).lstrip("/") for p in found)

    def folders(self, prefix: str) -> tuple[str, ...]:
        """The names of the folders directly under a prefix (one listing, not recursive)."""
        base = self._path(prefix).rstrip("/")
        if not self.fs.exists(base):
            return ()
        entries = self.fs.ls(base, detail=True)
        names = {str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries
                 if e.get("type") == "directory"}  # fmt: skip
        return tuple(sorted(names))

    def write_json(self, key: str, value: Any) -> bytes:
        data = canonical_json(value)
        self.write_bytes(key, data)
        return data

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


def canonical_json(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()


def read_parquet_bytes(data: bytes) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(data))


@dataclass(frozen=True)
class Published:
    pointer: str
    manifest: dict[str, Any]


def write_files(
    lake: Lake, prefix: str, files: Mapping[str, bytes], *, exact: bool = True
) -> dict[str, dict[str, Any]]:
    """Write a set of files once under a content-addressed prefix; describe what is stored.

    Files already there are never rewritten: a published manifest may point at them. With
    `exact`, what is stored must equal what we would write (deterministic encodings such as
    Parquet and JSON); without it, an equivalent earlier write is kept (a pickle of the same
    fitted object can differ byte-wise between processes).
    """
    described: dict[str, dict[str, Any]] = {}
    for name, data in sorted(files.items()):
        key = f"{prefix.rstrip('/')}/{name}"
        if not lake.exists(key):
            lake.write_bytes(key, data)
        stored = lake.read_bytes(key)
        if exact and stored != data:
            raise LakeError(f"{lake.url(key)} already holds different content")
        described[name] = {"key": key, "sha256": sha256(stored), "bytes": len(stored)}
    return described


def publish_pointer(lake: Lake, pointer: str, manifest: Mapping[str, Any]) -> Published:
    """Make a manifest (whose files are already written) the current one, in one write."""
    for entry in _file_entries(manifest):
        if not lake.exists(entry["key"]):
            raise LakeError(f"refusing to publish: {lake.url(entry['key'])} is missing")
    lake.write_json(pointer, dict(manifest))
    return Published(pointer=pointer, manifest=dict(manifest))


def read_pointer(lake: Lake, pointer: str) -> dict[str, Any]:
    if not lake.exists(pointer):
        raise LakeError(f"nothing published yet at {lake.url(pointer)}")
    manifest = lake.read_json(pointer)
    assert isinstance(manifest, dict)
    return manifest


def read_file(lake: Lake, entry: Mapping[str, Any]) -> bytes:
    """A manifest entry's bytes, verified against the manifest's SHA-256."""
    data = lake.read_bytes(entry["key"])
    if sha256(data) != entry["sha256"]:
        raise LakeError(f"checksum mismatch for {lake.url(entry['key'])}: the file was altered")
    return data


def _file_entries(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    entries: list[Mapping[str, Any]] = []
    for group in manifest.get("files", {}).values():
        entries.extend(group.values())
    return entries
