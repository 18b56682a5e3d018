"""The structure check of ONNX forms (`crimes.registry.onnx_structure`), on real skl2onnx
exports and on copies of them crafted the way an attacker with registry write access would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.tree import DecisionTreeClassifier

from crimes.registry.onnx_form import FormRefused, OnnxClassifier
from crimes.training import onnx_export

WIDTH = 6


@pytest.fixture(scope="module")
def forms() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(400, WIDTH))
    labels = np.array(["01A", "06", "14"])[rng.integers(0, 3, 400)]
    return {
        "tree": onnx_export.export_checked(
            DecisionTreeClassifier(max_depth=5).fit(rows, labels), rows
        ).data,
        "lda": onnx_export.export_checked(
            LinearDiscriminantAnalysis().fit(rows, labels), rows
        ).data,
    }


def _crafted(data: bytes, op_type: str, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The form with one node's attributes changed by `change` (a dict of name -> list)."""
    model = onnx.load_model_from_string(data)
    (node,) = [n for n in model.graph.node if n.op_type == op_type]
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    values = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}
    change(values)
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(k, v) for k, v in sorted(values.items()))
    return model.SerializeToString()


def _branch(values: dict[str, Any]) -> int:
    first: int = values["nodes_modes"].index(b"BRANCH_LEQ")
    return first


def _set(
    name: str, value: Any, where: Callable[[dict[str, Any]], int] = _branch
) -> Callable[[dict[str, Any]], None]:
    def change(values: dict[str, Any]) -> None:
        values[name][where(values)] = value

    return change


TREE_ATTACKS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "child-out-of-range": (_set("nodes_truenodeids", 10**6), "outside"),
    "negative-child": (_set("nodes_falsenodeids", -1), "outside"),
    "cycle-to-the-root": (_set("nodes_truenodeids", 0), "reached twice"),
    "nan-threshold": (_set("nodes_values", float("nan")), "threshold nan"),
    "infinite-threshold": (_set("nodes_values", float("inf")), "threshold inf"),
    "feature-past-the-input": (_set("nodes_featureids", WIDTH), f"feature {WIDTH} of {WIDTH}"),
    "unknown-mode": (_set("nodes_modes", b"JUMP"), "mode 'JUMP'"),
    "class-weight-on-a-branch": (
        _set("class_nodeids", 0, where=lambda v: 0),
        "not a leaf",
    ),
    "class-past-the-labels": (_set("class_ids", 7, where=lambda v: 0), "outside 0..2"),
    "nan-leaf-weight": (_set("class_weights", float("nan"), where=lambda v: 0), "weight is nan"),
    "duplicate-node-id": (_set("nodes_nodeids", 0, where=lambda v: 1), "node ids are not"),
}


@pytest.mark.parametrize("attack", sorted(TREE_ATTACKS))
def test_a_crafted_tree_is_refused_before_the_runtime_sees_it(
    forms: dict[str, bytes], attack: str
) -> None:
    change, reason = TREE_ATTACKS[attack]
    crafted = _crafted(forms["tree"], "TreeEnsembleClassifier", change)
    with pytest.raises(FormRefused, match="refused: ") as refused:
        OnnxClassifier(crafted, "crafted")
    assert reason in str(refused.value)


def test_an_unreachable_node_is_refused(forms: dict[str, bytes]) -> None:
    def orphan(values: dict[str, Any]) -> None:
        # The root's false child becomes its true child: that subtree is never reached.
        values["nodes_falsenodeids"][0] = values["nodes_truenodeids"][0]

    with pytest.raises(FormRefused, match=r"reached twice|never reached"):
        OnnxClassifier(_crafted(forms["tree"], "TreeEnsembleClassifier", orphan), "crafted")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_set("coefficients", float("nan"), where=lambda v: 0), "not finite"),
        (_set("intercepts", float("inf"), where=lambda v: 0), "not finite"),
        (lambda v: v.update(coefficients=v["coefficients"][:-1]), "coefficients"),
    ],
    ids=["nan-coefficient", "infinite-intercept", "short-coefficients"],
)
def test_a_crafted_linear_model_is_refused(
    forms: dict[str, bytes], change: Any, reason: str
) -> None:
    with pytest.raises(FormRefused, match=reason):
        OnnxClassifier(_crafted(forms["lda"], "LinearClassifier", change), "crafted")


@pytest.fixture(scope="module")
def lda_fp64() -> bytes:
    """LDA's float64 form (MatMul, Add, ArgMax, Softmax over constants), as the training
    exports it when float32 would change a label."""
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(400, WIDTH))
    labels = np.array(["01A", "06", "14"])[rng.integers(0, 3, 400)]
    return onnx_export.export(LinearDiscriminantAnalysis().fit(rows, labels), WIDTH, "FP64")


def _constant(data: bytes, name: str, change: Callable[[np.ndarray], np.ndarray]) -> bytes:
    from onnx import numpy_helper

    model = onnx.load_model_from_string(data)
    (tensor,) = [t for t in model.graph.initializer if t.name == name]
    tensor.CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(tensor)), name))
    return model.SerializeToString()


def test_the_float64_linear_form_passes_and_a_crafted_one_does_not(lda_fp64: bytes) -> None:
    assert OnnxClassifier(lda_fp64, "exported").n_features == WIDTH

    def poisoned(value: np.ndarray) -> np.ndarray:
        value = value.copy()
        value.flat[0] = np.nan
        return value

    with pytest.raises(FormRefused, match="not finite"):
        OnnxClassifier(_constant(lda_fp64, "coef", poisoned), "crafted")
    with pytest.raises(FormRefused, match="MatMul takes constants"):
        OnnxClassifier(_constant(lda_fp64, "coef", lambda v: v[:-1]), "crafted")


def test_an_operator_the_training_never_writes_is_refused(forms: dict[str, bytes]) -> None:
    model = onnx.load_model_from_string(forms["lda"])
    model.graph.node.append(helper.make_node("Loop", [], [], name="smuggled"))
    with pytest.raises(FormRefused, match=r"operator ai\.onnx\.Loop: not allowed"):
        OnnxClassifier(model.SerializeToString(), "crafted")


def test_not_onnx_at_all_is_refused() -> None:
    with pytest.raises(FormRefused, match="not a loadable ONNX model"):
        OnnxClassifier(b"\x08\x07garbage" * 10, "crafted")


def test_the_training_s_own_forms_pass_and_predict(forms: dict[str, bytes]) -> None:
    for data in forms.values():
        classifier = OnnxClassifier(data, "exported")
        assert classifier.n_features == WIDTH
        assert len(classifier.predict(np.zeros((3, WIDTH)), probabilities=False).labels) == 3
