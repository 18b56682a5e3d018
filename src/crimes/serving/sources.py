"""Where a model service gets its model: the MLflow registry, then the fallback chain.

The registry is the source of truth: `models:/<name>@<alias>` names the version to serve. When
it cannot be reached at start, the service serves, in this order, its own last good copy on
local disk, the fallback bundle published in the data lake, or a bundle folder named in its
settings; the first that loads and passes the checks wins.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from crimes import registry
from crimes.ops.logs import get_logger
from crimes.registry import Tag, artifacts, bundles, model_files
from crimes.registry.bundles import ModelBundle
from crimes.serving.errors import ModelLoadError
from crimes.serving.model import LoadedModel, Source, prepare
from crimes.serving.settings import ModelServerSettings
from crimes.transformation import document

log = get_logger("crimes.serving")


class RegistryError(RuntimeError):
    """The registry cannot name a version now: unreachable, or no such model/alias."""

    def __init__(self, message: str, *, reachable: bool) -> None:
        super().__init__(message)
        self.reachable = reachable


@dataclass(frozen=True)
class VersionRef:
    """A registered model version the alias points at."""

    name: str
    version: str
    run_id: str
    alias: str
    tags: dict[str, str]


class Registry(Protocol):
    def resolve(self) -> VersionRef:
        """The version the alias points at now; RegistryError when that cannot be known."""

    def load(self, ref: VersionRef) -> LoadedModel:
        """The checked model of that version; ModelLoadError when it cannot serve."""


def configure_mlflow_client(settings: ModelServerSettings) -> None:
    artifacts.bound_mlflow_calls(settings.mlflow_timeout_seconds, settings.mlflow_max_retries)


class MlflowRegistry:
    """The MLflow model registry, through MLflow's own client."""

    def __init__(self, settings: ModelServerSettings) -> None:
        from mlflow import MlflowClient

        self.settings = settings
        self.uri = settings.tracking_uri
        self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def resolve(self) -> VersionRef:
        from mlflow.exceptions import MlflowException

        name, alias = self.settings.name, self.settings.alias
        try:
            found = self._client.get_model_version_by_alias(name, alias)
        except MlflowException as error:
            # The server answered: the model or alias does not exist (yet).
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise RegistryError(
                    f"{registry.model_uri(name, alias)} does not exist: {error.message}",
                    reachable=True,
                ) from error
            raise RegistryError(
                f"MLflow at {self.uri}: {error.message}", reachable=False
            ) from error
        except Exception as error:
            raise RegistryError(f"MLflow at {self.uri}: {error!r}", reachable=False) from error
        return VersionRef(
            name=name,
            version=str(found.version),
            run_id=str(found.run_id or ""),
            alias=alias,
            tags={str(k): str(v) for k, v in (found.tags or {}).items()},
        )

    def load(self, ref: VersionRef) -> LoadedModel:
        uri = f"models:/{ref.name}/{ref.version}"
        try:
            return self._load(ref, uri)
        except ModelLoadError:
            raise
        except Exception as error:
            raise ModelLoadError(f"{uri}: {error!r}") from error

    def _load(self, ref: VersionRef, uri: str) -> LoadedModel:
        import mlflow.artifacts
        from mlflow.models import Model

        tagged = ref.tags.get(Tag.TRANSFORMATION_VERSION)
        if not tagged:
            raise ModelLoadError(f"{uri}: the version has no '{Tag.TRANSFORMATION_VERSION}' tag")
        if not ref.run_id:
            raise ModelLoadError(f"{uri}: the version has no run (its transformation lives there)")
        with tempfile.TemporaryDirectory(prefix="crimes-serving-") as scratch:
            # The transformation first: data, checked against the version's tag.
            transformation_file = mlflow.artifacts.download_artifacts(
                run_id=ref.run_id,
                artifact_path=registry.TRANSFORMATION_ARTIFACT,
                dst_path=str(Path(scratch) / "transformation"),
                tracking_uri=self.uri,
            )
            try:
                transformation = document.loads(
                    Path(transformation_file).read_bytes(), expected_version=tagged
                )
            except document.DocumentError as error:
                raise ModelLoadError(f"{uri}: its transformation: {error}") from error
            model_dir = artifacts.download_model(
                self.uri, ref.name, ref.version, Path(scratch) / "model"
            )
            try:
                # Nothing of the files is read, not even the MLmodel, before they check out.
                artifacts.verify_model_files(model_dir, ref.tags.get(Tag.MODEL_SHA256), uri)
            except artifacts.ModelFilesRefused as error:
                raise ModelLoadError(str(error)) from error
            logged = Model.load(str(model_dir))
            if "sklearn" not in logged.flavors:
                raise ModelLoadError(
                    f"{uri}: not an mlflow.sklearn model ({sorted(logged.flavors)})"
                )
            if logged.signature is None or logged.signature.inputs is None:
                raise ModelLoadError(f"{uri}: no model signature was logged")
            columns = [str(c) for c in logged.signature.inputs.input_names()]
            try:
                model = model_files.load_logged(model_dir, uri)
            except model_files.UntrustedModelFile as error:
                raise ModelLoadError(str(error)) from error
        classes = [str(c) for c in getattr(model, "classes_", [])]
        bundle = ModelBundle(
            name=ref.name,
            version=ref.version,
            model=model,
            transformation=transformation,
            metadata={
                "name": ref.name,
                "version": ref.version,
                "run_id": ref.run_id,
                "transformation_version": tagged,
                "classes": classes,
                "feature_names": columns,
                "metrics": {k: v for k, v in ref.tags.items() if k.startswith("test_")},
                "tags": ref.tags,
            },
            source=uri,
        )
        return prepare(bundle, Source.MLFLOW, uri, alias=ref.alias, signature_columns=columns)


@dataclass(frozen=True)
class Fallback:
    source: Source
    read: Callable[[], ModelBundle]


def fallbacks(settings: ModelServerSettings) -> list[Fallback]:
    """The fallback chain of these settings, in the order it is tried."""
    chain = [
        Fallback(
            Source.LOCAL_COPY,
            lambda: bundles.load_bundle_dir(settings.local_copy_dir, settings.name),
        )
    ]
    # The lake's bundle is the champion's: never a stand-in for another alias.
    if settings.use_lake_bundle and settings.alias == registry.CHAMPION:
        chain.append(Fallback(Source.LAKE, lambda: _lake_bundle(settings.name)))
    if settings.bundle_path is not None:
        path = settings.bundle_path
        chain.append(
            Fallback(Source.BUNDLE_PATH, lambda: bundles.load_bundle_dir(path, settings.name))
        )
    return chain


def _lake_bundle(name: str) -> ModelBundle:
    from crimes.lake.storage import Lake

    return bundles.read_bundle(Lake(), name)


def load_fallback(chain: list[Fallback], alias: str) -> tuple[LoadedModel | None, list[str]]:
    """The first fallback that loads and passes the checks, and why the others did not."""
    reasons: list[str] = []
    for fallback in chain:
        try:
            bundle = fallback.read()
            return prepare(bundle, fallback.source, bundle.source, alias=alias), reasons
        except Exception as error:
            reasons.append(f"{fallback.source}: {error}")
            log.warning(
                "model.fallback_unavailable", source=str(fallback.source), reason=str(error)
            )
    return None, reasons


def save_local_copy(settings: ModelServerSettings, model: LoadedModel) -> None:
    bundles.save_bundle_dir(settings.local_copy_dir, model.bundle)
