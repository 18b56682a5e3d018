"""A registered model version's own files, read through its training run (the transformation
document, the drift reference): what the gateway fetches by the version a service serves."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class ArtifactUnavailable(Exception):
    pass


def bound_mlflow_calls(timeout_seconds: float, max_retries: int) -> None:
    """Bound every MLflow HTTP call of this process (MLflow reads these per call: by default
    a hung server holds a call for minutes), and keep its download progress bars out of the
    structured logs."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(max(1, timeout_seconds)))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(max_retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


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
