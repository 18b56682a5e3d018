"""Model files are read through skops with the project's own trusted types: a pickle, a skops
file naming another type, and a model logged as a pickle are refused before anything in them
runs, wherever they come from (a logged model, a bundle folder)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.tree import DecisionTreeClassifier

from crimes.registry import model_files


class Marker:
    """Unpickling it writes a file: the evidence that a pickle ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.path).write_text, ("a pickle ran",))


class Homemade:
    """A type of no trusted package."""

    def __init__(self) -> None:
        self.classes_ = np.array(["01"])


def _fitted() -> list[Any]:
    rng = np.random.default_rng(0)
    x = rng.random((60, 3))
    y = np.array(["01", "02", "03"] * 20)
    return [DecisionTreeClassifier().fit(x, y), LinearDiscriminantAnalysis().fit(x, y)]


@pytest.mark.parametrize("model", _fitted(), ids=["dtc", "lda"])
def test_both_classifiers_round_trip(model: Any) -> None:
    back = model_files.loads(model_files.dumps(model), "test")
    x = np.random.default_rng(1).random((20, 3))
    assert type(back) is type(model)
    assert (back.predict(x) == model.predict(x)).all()


def test_a_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(model_files.UntrustedModelFile, match="not a skops model file"):
        model_files.loads(pickle.dumps(Marker(str(marker))), "test")
    assert not marker.exists()


def test_a_skops_file_naming_an_untrusted_type_is_refused() -> None:
    data = skops.io.dumps(Homemade())
    with pytest.raises(model_files.UntrustedModelFile, match="Homemade"):
        model_files.loads(data, "test")


def _logged(folder: Path, flavor: str, model_file: str, content: bytes) -> Path:
    folder.mkdir()
    (folder / "MLmodel").write_text(
        "flavors:\n  sklearn:\n"
        f"    pickled_model: {model_file}\n    serialization_format: {flavor}\n"
    )
    (folder / Path(model_file).name).write_bytes(content)
    return folder


def test_a_logged_model_is_read_only_when_logged_as_skops(tmp_path: Path) -> None:
    dtc = _fitted()[0]
    good = _logged(tmp_path / "good", "skops", "model.skops", model_files.dumps(dtc))
    assert type(model_files.load_logged(good, "good")) is DecisionTreeClassifier

    marker = tmp_path / "ran"
    pickled = _logged(
        tmp_path / "pickled", "cloudpickle", "model.pkl", pickle.dumps(Marker(str(marker)))
    )
    with pytest.raises(model_files.UntrustedModelFile, match="logged as 'cloudpickle'"):
        model_files.load_logged(pickled, "pickled")
    # Claiming skops does not get a pickle read either.
    lying = _logged(tmp_path / "lying", "skops", "model.skops", pickle.dumps(Marker(str(marker))))
    with pytest.raises(model_files.UntrustedModelFile):
        model_files.load_logged(lying, "lying")
    assert not marker.exists()

    outside = _logged(tmp_path / "outside", "skops", "../good/model.skops", b"")
    with pytest.raises(model_files.UntrustedModelFile, match="no model file"):
        model_files.load_logged(outside, "outside")


def test_mlflows_own_skops_model_is_read(tmp_path: Path) -> None:
    import mlflow.sklearn

    dtc = _fitted()[0]
    mlflow.sklearn.save_model(
        dtc,
        str(tmp_path / "saved"),
        serialization_format=model_files.SERIALIZATION_FORMAT,
        skops_trusted_types=list(model_files.TRUSTED_TYPES),
    )
    assert type(model_files.load_logged(tmp_path / "saved", "saved")) is DecisionTreeClassifier
