from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import pytest
from sklearn.tree import DecisionTreeClassifier

from crimes import contract
from crimes.etl import synthetic
from crimes.etl.preprocess import preprocess
from crimes.lake import layout, storage
from crimes.lake.settings import LakeSettings
from crimes.lake.storage import Lake, LakeError
from crimes.registry import bundles, onnx_form
from crimes.registry.onnx_form import FormRefused, OnnxClassifier
from crimes.training import onnx_export
from crimes.transformation import fitting


@pytest.fixture(scope="module")
def bundle() -> bundles.ModelBundle:
    data, _ = preprocess(synthetic.sample(800))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted, matrix = fitting.fit_transform(data[list(contract.FEATURES)], data[contract.TARGET])
    model = DecisionTreeClassifier(random_state=0).fit(matrix.to_numpy(), data[contract.TARGET])
    return bundles.ModelBundle(
        name="dtc_model_prod",
        version="3",
        model=onnx_export.export(model, matrix.shape[1], "FP32"),
        transformation=fitting.export(fitted),
        metadata={
            "name": "dtc_model_prod",
            "version": "3",
            "run_id": "r1",
            "transformation_version": fitting.export(fitted).version,
            "classes": model.classes_.tolist(),
            "feature_names": list(matrix.columns),
            "metrics": {"test_accuracy": 1.0},
        },
    )


def test_bundle_round_trips_through_the_lake(bundle: bundles.ModelBundle, tmp_path: Path) -> None:
    lake = Lake(LakeSettings(root=f"file://{tmp_path}/data"))
    bundles.write_bundle(lake, bundle)
    back = bundles.read_bundle(lake, "dtc_model_prod")
    assert back.version == "3"
    assert back.transformation_version == bundle.transformation_version
    assert back.model == bundle.model
    assert list(OnnxClassifier(back.model, "back").classes) == bundle.metadata["classes"]
    assert back.source.endswith("chicago/crimes/models/dtc_model_prod/v3")


def test_bundle_round_trips_through_a_folder(bundle: bundles.ModelBundle, tmp_path: Path) -> None:
    folder = tmp_path / "last-good"
    bundles.save_bundle_dir(folder, bundle)
    bundles.save_bundle_dir(folder, bundle)  # replacing an existing copy
    back = bundles.load_bundle_dir(folder)
    assert (back.name, back.version) == ("dtc_model_prod", "3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-good"]
    with pytest.raises(FileNotFoundError, match="no model bundle"):
        bundles.load_bundle_dir(tmp_path / "nothing")


def test_a_bundle_with_a_mismatched_transformation_is_refused(
    bundle: bundles.ModelBundle, tmp_path: Path
) -> None:
    folder = tmp_path / "bad"
    bundles.save_bundle_dir(folder, bundle)
    text = (folder / "metadata.json").read_text()
    (folder / "metadata.json").write_text(
        text.replace(bundle.transformation_version, "tf-0000000000000000")
    )
    with pytest.raises(LakeError, match="another or an altered transformation"):
        bundles.load_bundle_dir(folder)


def test_the_gateway_reads_only_the_transformation_of_a_lake_bundle(
    bundle: bundles.ModelBundle, tmp_path: Path
) -> None:
    lake = Lake(LakeSettings(root=f"file://{tmp_path}/data"))
    bundles.write_bundle(lake, bundle)
    assert bundles.read_bundle_transformation(lake, "dtc_model_prod") == bundle.transformation.data


def test_a_bundle_whose_model_file_is_a_pickle_is_refused_and_never_runs(
    bundle: bundles.ModelBundle, tmp_path: Path
) -> None:
    """Locally and in the lake (even with the lake's checksums rewritten to match it): the
    model file is data for onnxruntime, which refuses it; nothing unpickles it."""
    from tests.registry.test_model_files import Marker

    marker = tmp_path / "ran"
    evil = pickle.dumps(Marker(str(marker)))
    folder = tmp_path / "copy"
    bundles.save_bundle_dir(folder, bundle)
    assert bundles.load_bundle_dir(folder).version == "3"
    (folder / onnx_form.MODEL_FILE).write_bytes(evil)
    with pytest.raises(FormRefused, match="not a loadable ONNX model"):
        OnnxClassifier(bundles.load_bundle_dir(folder).model, "copy")

    lake = Lake(LakeSettings(root=f"file://{tmp_path}/data"))
    manifest = bundles.write_bundle(lake, bundle)
    entry = manifest["files"]["bundle"][onnx_form.MODEL_FILE]
    lake.write_bytes(entry["key"], evil)
    entry["sha256"] = storage.sha256(evil)
    entry["bytes"] = len(evil)
    storage.publish_pointer(lake, layout.bundle_pointer("dtc_model_prod"), manifest)
    with pytest.raises(FormRefused, match="not a loadable ONNX model"):
        OnnxClassifier(bundles.read_bundle(lake, "dtc_model_prod").model, "lake")
    assert not marker.exists()
