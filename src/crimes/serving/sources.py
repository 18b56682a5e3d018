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
from crimes.registry import Tag, artifacts, bundles, mlflow_rest, onnx_form, signing
from crimes.registry.bundles import ModelBundle
from crimes.serving.errors import ModelLoadError
from crimes.serving.model import LoadedModel, Source, prepare
from crimes.serving.settings import ModelServerSettings
from crimes.transformation import document
from crimes.transformation.document import TransformationDocument

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


class MlflowRegistry:
    """The MLflow model registry, read over its REST API (crimes.registry.mlflow_rest): one
    small call per poll, and the version's files through the server's artifact proxy, with no
    MLflow client imported at all (a service serves in a fraction of the memory)."""

    def __init__(self, settings: ModelServerSettings) -> None:
        self.settings = settings
        self.uri = settings.tracking_uri
        self.rest = mlflow_rest.MlflowRest(
            settings.tracking_uri, settings.mlflow_timeout_seconds, settings.mlflow_max_retries
        )
        self.bounds = mlflow_rest.Bounds(max_bytes=settings.max_model_bytes)
        # The training's public key, when the deployment gives it (checked by the settings).
        self.verify_key = signing.public_key(settings.verify_key) if settings.verify_key else None

    def resolve(self) -> VersionRef:
        name, alias = self.settings.name, self.settings.alias
        try:
            found = self.rest.alias(name, alias)
        except mlflow_rest.MlflowUnreachable as error:
            raise RegistryError(str(error), reachable=False) from error
        except mlflow_rest.MlflowRefused as error:
            # The server answered: the model or alias does not exist (yet).
            if error.code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise RegistryError(
                    f"{registry.model_uri(name, alias)} does not exist: {error}", reachable=True
                ) from error
            raise RegistryError(f"MLflow at {self.uri}: {error}", reachable=False) from error
        return VersionRef(
            name=name,
            version=str(found.get("version", "")),
            run_id=str(found.get("run_id") or ""),
            alias=alias,
            tags={str(t["key"]): str(t.get("value", "")) for t in found.get("tags") or []},
        )

    def load(self, ref: VersionRef) -> LoadedModel:
        uri = f"models:/{ref.name}/{ref.version}"
        try:
            return self._load(ref, uri)
        except ModelLoadError:
            raise
        except Exception as error:
            raise ModelLoadError(f"{uri}: {error}") from error

    def _check_signature(self, ref: VersionRef, digest: str, transformation_version: str) -> None:
        """Where the deployment gives the training's public key, the version's form must
        carry the training's signature on its digest, run and transformation."""
        if self.verify_key is None:
            return
        statement = signing.Statement(ref.name, ref.run_id, digest, transformation_version)
        signing.verify(self.verify_key, statement, ref.tags.get(Tag.ONNX_SIGNATURE))

    def _load(self, ref: VersionRef, uri: str) -> LoadedModel:
        tagged, form_uri = _servable(ref, uri)
        with tempfile.TemporaryDirectory(prefix="crimes-serving-") as scratch:
            transformation = self._transformation(ref, uri, tagged, Path(scratch))
            form_dir = self.rest.download_tree(
                self.rest.logged_model_artifact_uri(form_uri), Path(scratch) / "onnx", self.bounds
            )
            try:
                # Nothing of the files is read, not even the MLmodel, before they check out:
                # the files against the version's digest, then the training's signature on it.
                digest = ref.tags.get(Tag.ONNX_SHA256)
                artifacts.verify_model_files(
                    form_dir, digest, f"{uri} ({form_uri})", Tag.ONNX_SHA256
                )
                self._check_signature(ref, str(digest), tagged)
                form = onnx_form.logged_file(form_dir, form_uri)
            except (
                artifacts.ModelFilesRefused,
                onnx_form.FormRefused,
                signing.SignatureRefused,
            ) as error:
                raise ModelLoadError(str(error)) from error
        bundle = ModelBundle(
            name=ref.name,
            version=ref.version,
            model=form,
            transformation=transformation,
            metadata={
                "name": ref.name,
                "version": ref.version,
                "run_id": ref.run_id,
                "transformation_version": tagged,
                "feature_names": list(transformation.output_columns),
                "metrics": {k: v for k, v in ref.tags.items() if k.startswith("test_")},
                "tags": ref.tags,
            },
            source=uri,
        )
        return prepare(
            bundle, Source.MLFLOW, uri, alias=ref.alias, threads=self.settings.onnx_threads
        )

    def _transformation(
        self, ref: VersionRef, uri: str, tagged: str, scratch: Path
    ) -> TransformationDocument:
        """The version's transformation: data, checked against the version's tag."""
        path = self.rest.download_file(
            self.rest.run_artifact_uri(ref.run_id),
            registry.TRANSFORMATION_ARTIFACT,
            scratch / registry.TRANSFORMATION_FILE,
            self.bounds,
        )
        try:
            return document.loads(path.read_bytes(), expected_version=tagged)
        except document.DocumentError as error:
            raise ModelLoadError(f"{uri}: its transformation: {error}") from error


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


def load_fallback(
    chain: list[Fallback], alias: str, threads: int = 1
) -> tuple[LoadedModel | None, list[str]]:
    """The first fallback that loads and passes the checks, and why the others did not."""
    reasons: list[str] = []
    for fallback in chain:
        try:
            bundle = fallback.read()
            loaded = prepare(bundle, fallback.source, bundle.source, alias=alias, threads=threads)
            return loaded, reasons
        except Exception as error:
            reasons.append(f"{fallback.source}: {error}")
            log.warning(
                "model.fallback_unavailable", source=str(fallback.source), reason=str(error)
            )
    return None, reasons


def save_local_copy(settings: ModelServerSettings, model: LoadedModel) -> None:
    bundles.save_bundle_dir(settings.local_copy_dir, model.bundle)


def _servable(ref: VersionRef, uri: str) -> tuple[str, str]:
    """The version's transformation tag and ONNX form, which a version must have to serve."""
    tagged = ref.tags.get(Tag.TRANSFORMATION_VERSION)
    if not tagged:
        raise ModelLoadError(f"{uri}: the version has no '{Tag.TRANSFORMATION_VERSION}' tag")
    if not ref.run_id:
        raise ModelLoadError(f"{uri}: the version has no run (its transformation lives there)")
    form_uri = ref.tags.get(Tag.ONNX_MODEL)
    if not form_uri:
        raise ModelLoadError(
            f"{uri}: the version has no ONNX form (registered before the services ran "
            f"ONNX); add it with: crimes add-onnx {ref.name} {ref.version}"
        )
    return tagged, form_uri
