"""A registered model version's own files, read through its training run (the transformation
document, the drift reference): what the gateway fetches by the version a service serves."""

from __future__ import annotations

import tempfile
from pathlib import Path


class ArtifactUnavailable(Exception):
    pass


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
