"""What a model service reads from MLflow, over MLflow's REST API with httpx: an alias, and the
files of a run or of a logged model through the server's artifact proxy.

MLflow's own client would import ~100 MB and a second of modules into a process that serves
an ONNX file; these few read-only calls need none of it. Every deployment of the project runs
MLflow with `--serve-artifacts`, so artifacts are `mlflow-artifacts:` URIs read through the
server (the model services hold no object-store keys, by design).
"""

from __future__ import annotations

import functools
import os
import posixpath
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlparse

import httpx

PROXIED_SCHEME: Final = "mlflow-artifacts"
# A logged model's URI as the training tags a version with it (`models:/m-<id>`).
LOGGED_MODEL_PREFIX: Final = "models:/m-"
# A folder deeper than this is not a model's: refused rather than walked.
MAX_DEPTH: Final = 8


class MlflowUnreachable(Exception):
    """MLflow did not answer (connection, timeout, a 5xx)."""


class MlflowRefused(Exception):
    """MLflow answered, and not with what was asked (no such model, alias, run or file; or an
    answer out of the bounds a model's files keep)."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Bounds:
    """What one download may hold: a registry that serves more is refused, not followed."""

    max_bytes: int
    max_files: int = 64


def _credentials() -> tuple[dict[str, str], httpx.BasicAuth | None]:
    """The credentials MLflow's own client would send (MLFLOW_TRACKING_TOKEN, or
    MLFLOW_TRACKING_USERNAME and _PASSWORD)."""
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {token}"}, None
    if user := os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return {}, httpx.BasicAuth(user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
    return {}, None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, made once per process: a model service asks MLflow for its
    alias every few seconds, and each new context loads the whole CA bundle again (about 20 ms
    of CPU, holding the GIL its requests need)."""
    return httpx.create_ssl_context()


class MlflowRest:
    """A read-only MLflow REST client: one timeout and retry policy for every call."""

    def __init__(self, tracking_uri: str, timeout_seconds: float, max_retries: int) -> None:
        self.uri = tracking_uri.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries

    def _client(self) -> httpx.Client:
        headers, auth = _credentials()
        return httpx.Client(
            base_url=self.uri,
            transport=httpx.HTTPTransport(verify=_tls_context(), retries=self.max_retries),
            timeout=self.timeout_seconds,
            trust_env=False,
            headers=headers,
            auth=auth,
        )

    def _get_json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            with self._client() as client:
                answer = client.get(path, params=params)
        except httpx.HTTPError as error:
            raise MlflowUnreachable(f"MLflow at {self.uri}: {error!r}") from error
        body = _json(answer)
        if answer.status_code >= 500:
            raise MlflowUnreachable(
                f"MLflow at {self.uri}: {answer.status_code}: {body.get('message', '')}"
            )
        if answer.status_code != 200:
            code = str(body.get("error_code", answer.status_code))
            message = str(body.get("message", answer.reason_phrase))
            raise MlflowRefused(f"{code}: {message}", code=code)
        return body

    def alias(self, name: str, alias: str) -> dict[str, Any]:
        """The model version (MLflow's JSON) the alias points at."""
        body = self._get_json(
            "/api/2.0/mlflow/registered-models/alias", {"name": name, "alias": alias}
        )
        found = body.get("model_version")
        return found if isinstance(found, dict) else {}

    def run_artifact_uri(self, run_id: str) -> str:
        body = self._get_json("/api/2.0/mlflow/runs/get", {"run_id": run_id})
        return str(((body.get("run") or {}).get("info") or {}).get("artifact_uri") or "")

    def logged_model_artifact_uri(self, model_uri: str) -> str:
        """Where the files of a logged model (`models:/m-<id>`) are."""
        if not model_uri.startswith(LOGGED_MODEL_PREFIX):
            raise MlflowRefused(f"{model_uri!r} is not a logged model's URI (models:/m-...)")
        model_id = model_uri.removeprefix("models:/")
        body = self._get_json(f"/api/2.0/mlflow/logged-models/{quote(model_id, safe='')}", {})
        return str(((body.get("model") or {}).get("info") or {}).get("artifact_uri") or "")

    def download_file(self, artifact_uri: str, path: str, target: Path, bounds: Bounds) -> Path:
        """One file under `artifact_uri`, written to `target`."""
        root = _proxied_path(artifact_uri)
        with self._client() as client:
            self._stream(client, posixpath.join(root, path), target, bounds.max_bytes)
        return target

    def download_tree(self, artifact_uri: str, folder: Path, bounds: Bounds) -> Path:
        """Every file under `artifact_uri`, in `folder` with the same relative paths; what
        breaks the bounds (too many files, too many bytes, too deep) is refused."""
        root = _proxied_path(artifact_uri)
        folder.mkdir(parents=True, exist_ok=True)
        budget = _Budget(bounds)
        with self._client() as client:
            for relative in self._walk(client, root, "", budget):
                target = folder / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                written = self._stream(
                    client, posixpath.join(root, relative), target, budget.bytes_left
                )
                budget.spend(written)
        return folder

    def _walk(self, client: httpx.Client, root: str, relative: str, budget: _Budget) -> list[str]:
        if relative.count("/") >= MAX_DEPTH:
            raise MlflowRefused(f"{root}: folders deeper than {MAX_DEPTH}: not a model's files")
        listed = self._list(client, posixpath.join(root, relative) if relative else root)
        files: list[str] = []
        for entry in listed:
            name = _safe_name(str(entry.get("path", "")), root)
            path = posixpath.join(relative, name) if relative else name
            if entry.get("is_dir"):
                files += self._walk(client, root, path, budget)
            else:
                budget.count_file(int(entry.get("file_size") or 0))
                files.append(path)
        return files

    def _list(self, client: httpx.Client, path: str) -> list[dict[str, Any]]:
        try:
            answer = client.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": path})
        except httpx.HTTPError as error:
            raise MlflowUnreachable(f"MLflow at {self.uri}: {error!r}") from error
        if answer.status_code != 200:
            raise _failed(answer, path)
        files = _json(answer).get("files") or []
        return [entry for entry in files if isinstance(entry, dict)]

    def _stream(self, client: httpx.Client, path: str, target: Path, max_bytes: int) -> int:
        written = 0
        try:
            with client.stream("GET", f"/api/2.0/mlflow-artifacts/artifacts/{quote(path)}") as got:
                if got.status_code != 200:
                    got.read()
                    raise _failed(got, path)
                with target.open("wb") as out:
                    for chunk in got.iter_bytes():
                        written += len(chunk)
                        if written > max_bytes:
                            raise MlflowRefused(f"{path}: more than {max_bytes} bytes")
                        out.write(chunk)
        except httpx.HTTPError as error:
            raise MlflowUnreachable(f"MLflow at {self.uri}: {error!r}") from error
        return written


class _Budget:
    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self.files = 0
        self.bytes_left = bounds.max_bytes

    def count_file(self, listed_size: int) -> None:
        self.files += 1
        if self.files > self.bounds.max_files:
            raise MlflowRefused(f"more than {self.bounds.max_files} files: not a model's")
        if listed_size > self.bounds.max_bytes:
            raise MlflowRefused(f"a file of {listed_size} bytes: over {self.bounds.max_bytes}")

    def spend(self, written: int) -> None:
        self.bytes_left -= written


def _proxied_path(artifact_uri: str) -> str:
    """The path under the server's artifact root of an `mlflow-artifacts:` URI."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme != PROXIED_SCHEME:
        raise MlflowRefused(
            f"{artifact_uri!r}: not served through MLflow's artifact proxy (run the server "
            "with --serve-artifacts; the model services hold no object-store keys)"
        )
    return parsed.path.strip("/")


def _safe_name(name: str, root: str) -> str:
    base = posixpath.basename(name)
    if base in ("", ".", "..") or "\\" in base or "\0" in base:
        raise MlflowRefused(f"{root}: an artifact named {name!r}: refused")
    return base


def _failed(answer: httpx.Response, path: str) -> Exception:
    if answer.status_code >= 500:
        return MlflowUnreachable(f"{path}: MLflow answered {answer.status_code}")
    body = _json(answer)
    code = str(body.get("error_code", answer.status_code))
    return MlflowRefused(f"{path}: {code}: {body.get('message', answer.reason_phrase)}", code=code)


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
