"""A registered model version's own files, read through its training run (the transformation
document, the drift reference): what the gateway fetches by the version a service serves."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Final

from crimes.registry import Tag, model_files

# Written into a downloaded registered model by MLflow's client itself (its name and version),
# never read from the store: not part of what is verified.
CLIENT_WRITTEN: Final = frozenset({"registered_model_meta"})


class ArtifactUnavailable(Exception):
    pass


class ModelFilesRefused(Exception):
    """A registered version's files that are not loaded: unverifiable, changed, or unsafe."""


def bound_mlflow_calls(timeout_seconds: float, max_retries: int) -> None:
    """Bound every MLflow HTTP call of this process (MLflow reads these per call: by default
    a hung server holds a call for minutes), and keep its download progress bars out of the
    structured logs."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(max(1, timeout_seconds)))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    # Through the server only: offered by a server whose store is S3, MLflow's client fetches
    # artifacts straight from the object store by presigned URLs, which the gateway cannot
    # reach (it holds no keys and is on no network of the store, by design).
    os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"] = "false"


def version_artifact(
    tracking_uri: str, model_name: str, model_version: str, artifact_path: str
) -> bytes:
    """The bytes of `artifact_path` in the run that made `model_name` version `model_version`."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run_id = client.get_model_version(model_name, model_version).run_id
    if not run_id:
        raise ArtifactUnavailable(f"{model_name} version {model_version} has no run")
    with tempfile.TemporaryDirectory(prefix="crimes-artifact-") as folder:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=artifact_path,
            dst_path=folder,
            tracking_uri=tracking_uri,
        )
        return Path(path).read_bytes()


def version_tags(tracking_uri: str, model_name: str, model_version: str) -> dict[str, str]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return dict(client.get_model_version(model_name, model_version).tags or {})


def directory_sha256(folder: Path) -> str:
    """One SHA-256 over every file of a model's folder (relative paths and contents, in order):
    any file changed, added or removed changes it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative in CLIENT_WRITTEN:
            continue
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"{relative}\0{content}\n".encode())
    return digest.hexdigest()


def download_model(tracking_uri: str, name: str, version: str, folder: Path) -> Path:
    """The files of a registered model version, in `folder` (nothing is deserialised)."""
    return download_model_files(tracking_uri, f"models:/{name}/{version}", folder)


def download_model_files(tracking_uri: str, model_uri: str, folder: Path) -> Path:
    """The files of a model (`models:/name/version`, or a logged model `models:/m-...`), in
    `folder` (nothing is deserialised)."""
    import mlflow

    path = mlflow.artifacts.download_artifacts(
        artifact_uri=model_uri,
        dst_path=str(folder),
        tracking_uri=tracking_uri,
        registry_uri=tracking_uri,
    )
    return Path(path)


def record_model_sha256(tracking_uri: str, name: str, version: str) -> str:
    """Tag a just-registered version with the SHA-256 of its files as the store holds them."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="crimes-digest-") as scratch:
        digest = directory_sha256(download_model(tracking_uri, name, version, Path(scratch)))
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.set_model_version_tag(name, version, Tag.MODEL_SHA256, digest)
    return digest


def verify_model_files(
    model_dir: Path, expected: str | None, source: str, tag: str = Tag.MODEL_SHA256
) -> None:
    """The files are the ones registered (the version's `tag`), or nothing of them is read."""
    if not expected:
        raise ModelFilesRefused(
            f"{source}: the version has no '{tag}' tag: its files cannot be "
            "verified, so they are not loaded"
        )
    actual = directory_sha256(model_dir)
    if actual != expected:
        raise ModelFilesRefused(
            f"{source}: refused: its files' SHA-256 is {actual[:16]}..., the version was "
            f"registered with {expected[:16]}... (changed in the store since)"
        )


def load_version_model(tracking_uri: str, name: str, version: str) -> Any:
    """The classifier of a registered version, as a model service would load it: its files
    verified first, then read by skops only."""
    expected = version_tags(tracking_uri, name, version).get(Tag.MODEL_SHA256)
    source = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory(prefix="crimes-model-") as scratch:
        model_dir = download_model(tracking_uri, name, version, Path(scratch))
        verify_model_files(model_dir, expected, source)
        try:
            return model_files.load_logged(model_dir, source)
        except model_files.UntrustedModelFile as error:
            raise ModelFilesRefused(str(error)) from error
