"""Attack surface: the model registry. Someone with registry write access registers a crafted
ONNX form (its digest tagged to match, as anyone who can write the registry can) and moves the
champion alias to it: two replicas of the model service refuse it with a clear log line, never
crash, and keep answering with the version they served."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import helper

from crimes.registry import Tag
from crimes.training import onnx_export
from tests.serving.models import Trained, train
from tests.serving.models import onnx as exported
from tests.serving.processes import ServiceProcess, move_alias, register, start_service

pytestmark = pytest.mark.e2e


def _crafted(data: bytes, change: Callable[[onnx.ModelProto], None]) -> bytes:
    model = onnx.load_model_from_string(data)
    change(model)
    return model.SerializeToString()


def _tree_attribute(name: str, value: Any) -> Callable[[onnx.ModelProto], None]:
    """Set the first branch node's `name` in the tree ensemble to `value`."""

    def change(model: onnx.ModelProto) -> None:
        (node,) = [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]
        values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        modes = list(values["nodes_modes"])
        changed = list(values[name])
        changed[modes.index(b"BRANCH_LEQ")] = value
        values[name] = changed
        del node.attribute[:]
        node.attribute.extend(helper.make_attribute(k, v) for k, v in sorted(values.items()))

    return change


def _wider_input(model: onnx.ModelProto) -> None:
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value += 1


ATTACKS = {
    "child-out-of-range": (_tree_attribute("nodes_truenodeids", 10**6), "outside"),
    "cycle": (_tree_attribute("nodes_falsenodeids", 0), "reached twice"),
    "nan-threshold": (_tree_attribute("nodes_values", float("nan")), "threshold nan"),
    "wrong-input-width": (_wider_input, "features"),
}


@pytest.fixture(scope="module")
def tree() -> Trained:
    return train("dtc", on_array=True)


@pytest.fixture(scope="module")
def replicas(
    stack_env: dict[str, str], tree: Trained, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, list[ServiceProcess]]]:
    """Two replicas of a model service on a registered champion."""
    name = f"dtc_attacked_{uuid.uuid4().hex[:8]}"
    version, _ = register(tree, name)
    folder: Path = tmp_path_factory.mktemp("replicas")
    started = [start_service("dtc", name, stack_env, folder / f"r{i}") for i in range(2)]
    try:
        for replica in started:
            replica.wait_until("SERVING")
        yield name, version, started
    finally:
        codes = [replica.stop() for replica in started]
    assert codes == [0, 0], "a replica did not stop cleanly"


def _register_crafted(tree: Trained, name: str, form: bytes) -> str:
    """A version whose ONNX form is `form`, tagged with its own digest (as a registry writer
    can), as the training would tag a checked one."""
    import mlflow

    version, _ = register(tree, name, alias=None, onnx_form=False)
    with mlflow.start_run():
        onnx_export.log_form(
            name, version, onnx_export.Exported(form, "FP32", 1), tree.transformation_version
        )
    tags = mlflow.MlflowClient().get_model_version(name, version).tags
    assert tags[Tag.ONNX_SHA256]
    return version


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_crafted_form_promoted_to_champion_is_refused_by_every_replica(
    replicas: tuple[str, str, list[ServiceProcess]], tree: Trained, attack: str
) -> None:
    """Attack: register a crafted ONNX form and move `champion` to it."""
    name, serving, started = replicas
    change, reason = ATTACKS[attack]
    crafted = _register_crafted(tree, name, _crafted(exported(tree), change))
    move_alias(name, crafted)
    try:
        for replica in started:
            failure = replica.wait_for_log("model.load_failed", version=crafted)
            assert reason in failure["reason"], failure
            assert replica.metadata()["version"] == serving
            assert replica.health() == "SERVING"
            replica.alive()
    finally:
        move_alias(name, serving)
