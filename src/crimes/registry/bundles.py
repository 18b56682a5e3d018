"""The model bundle: the self-contained copy of one version that lets a model service start
when MLflow is unreachable: the classifier's ONNX form (what the services run), the document of
the transformation it was trained with, and its metadata, as three files. The same three files
form the bundle in the data lake (published atomically like every lake set, at
`layout.bundle_prefix`) and on a service's local disk (its last good model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from crimes.lake import layout, storage
from crimes.lake.storage import Lake
from crimes.registry import onnx_form
from crimes.transformation import document
from crimes.transformation.document import TransformationDocument

BUNDLE_FILES: Final = (onnx_form.MODEL_FILE, document.FILE_NAME, "metadata.json")


@dataclass
class ModelBundle:
    """One model version with everything needed to serve it without MLflow.

    `metadata` holds at least: name, version, run_id, transformation_version, classes,
    feature_names, metrics; `source` says where this copy was read from.
    """

    name: str
    version: str
    model: bytes  # the ONNX form
    transformation: TransformationDocument
    metadata: dict[str, Any]
    source: str = field(default="memory")

    @property
    def transformation_version(self) -> str:
        return str(self.metadata["transformation_version"])

    def files(self) -> dict[str, bytes]:
        return {
            onnx_form.MODEL_FILE: self.model,
            document.FILE_NAME: self.transformation.data,
            "metadata.json": storage.canonical_json(self.metadata),
        }


def bundle_of(
    name: str,
    version: str,
    run_id: str,
    model: bytes,
    transformation: TransformationDocument,
    *,
    metrics: dict[str, float] | None = None,
    **extra: Any,
) -> ModelBundle:
    """A model version (its ONNX form) as a bundle; what a model service checks is derived,
    never restated.

    The transformation version, the classes and the input columns come from the form and the
    document themselves, so a bundle cannot name a transformation or columns its model was not
    made with.
    """
    classes = onnx_form.OnnxClassifier(model, f"{name} version {version}").classes
    return ModelBundle(
        name=name,
        version=version,
        model=model,
        transformation=transformation,
        metadata={
            **extra,
            "name": name,
            "version": version,
            "run_id": run_id,
            "transformation_version": transformation.version,
            "classes": list(classes),
            "feature_names": list(transformation.output_columns),
            "metrics": metrics or {},
        },
    )


def _bundle(name: str, files: dict[str, bytes], source: str) -> ModelBundle:
    metadata = json.loads(files["metadata.json"])
    try:
        transformation = document.loads(
            files[document.FILE_NAME], expected_version=str(metadata["transformation_version"])
        )
    except document.DocumentError as error:
        raise storage.LakeError(f"bundle at {source}: its transformation: {error}") from error
    return ModelBundle(
        name=name,
        version=str(metadata["version"]),
        model=files[onnx_form.MODEL_FILE],
        transformation=transformation,
        metadata=metadata,
        source=source,
    )


def write_bundle(lake: Lake, bundle: ModelBundle) -> dict[str, Any]:
    """Publish a bundle to the data lake and make it the model's current fallback."""
    prefix = layout.bundle_prefix(bundle.name, bundle.version)
    files = bundle.files()
    described = {
        **storage.write_files(
            lake,
            prefix,
            {name: files[name] for name in ("metadata.json", document.FILE_NAME)},
        ),
        # Two exports of one fitted object may differ byte-wise (names of graph nodes between
        # converter releases): written once.
        **storage.write_files(
            lake, prefix, {onnx_form.MODEL_FILE: files[onnx_form.MODEL_FILE]}, exact=False
        ),
    }
    manifest = {
        "name": bundle.name,
        "version": bundle.version,
        "transformation_version": bundle.transformation_version,
        "files": {"bundle": described},
    }
    storage.publish_pointer(lake, layout.bundle_pointer(bundle.name), manifest)
    return manifest


def read_bundle(lake: Lake, name: str) -> ModelBundle:
    """The model's current fallback bundle from the data lake, checksums verified."""
    manifest = storage.read_pointer(lake, layout.bundle_pointer(name))
    files = {n: storage.read_file(lake, e) for n, e in manifest["files"]["bundle"].items()}
    return _bundle(name, files, lake.url(layout.bundle_prefix(name, str(manifest["version"]))))


def save_bundle_dir(folder: Path, bundle: ModelBundle) -> None:
    """Keep a bundle on local disk; the folder is replaced whole (rename), never half-written."""
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".staging")
    staging.mkdir(parents=True, exist_ok=True)
    for name, data in bundle.files().items():
        (staging / name).write_bytes(data)
    previous = folder.with_name(folder.name + ".previous")
    if folder.exists():
        if previous.exists():
            _remove_tree(previous)
        folder.rename(previous)
    staging.rename(folder)
    if previous.exists():
        _remove_tree(previous)


def load_bundle_dir(folder: Path, name: str | None = None) -> ModelBundle:
    folder = Path(folder)
    missing = [f for f in BUNDLE_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"no model bundle at {folder}: missing {', '.join(missing)}")
    files = {f: (folder / f).read_bytes() for f in BUNDLE_FILES}
    metadata = json.loads(files["metadata.json"])
    return _bundle(name or str(metadata["name"]), files, str(folder))


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def read_bundle_transformation(lake: Lake, name: str) -> bytes:
    """Only the transformation's document of the model's current bundle (checksum verified):
    what the gateway needs, without touching the model file."""
    manifest = storage.read_pointer(lake, layout.bundle_pointer(name))
    return storage.read_file(lake, manifest["files"]["bundle"][document.FILE_NAME])
