"""The structure of an ONNX form, checked in our code before any runtime is given it.

A registered file is data someone with registry write access could have crafted: a tree whose
child indices point outside its nodes, or loop back, can crash or hang the runtime that walks it,
whatever checks that runtime makes itself. So, before onnxruntime sees a form: only the
operators the training exports; every tree a tree (node ids 0..n-1, children in range, each node
reached once from the root: no cycle, nothing unreachable), feature indices below the input's
width, finite thresholds and weights, leaf classes among the declared labels; a linear model's
coefficients (or its float64 form's constants) finite and shaped features x classes. What
fails is refused (FormRefused), and the service keeps what it serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

ML: Final = "ai.onnx.ml"
# What skl2onnx writes for this project's classifiers (the tree; LDA as a linear classifier and
# its normaliser), and the plumbing it may add around them.
ALLOWED_OPERATORS: Final = frozenset(
    {
        (ML, "TreeEnsembleClassifier"),
        (ML, "LinearClassifier"),
        (ML, "Normalizer"),
        ("", "Cast"),
        ("", "Identity"),
        # LDA on float64: scores = features x coef + intercept, then argmax and softmax.
        ("", "MatMul"),
        ("", "Add"),
        ("", "ArgMax"),
        ("", "Softmax"),
        ("", "Reshape"),
        (ML, "ArrayFeatureExtractor"),
    }
)
BRANCH_MODES: Final = frozenset(
    {"BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"}
)
LEAF: Final = "LEAF"


class StructureRefused(ValueError):
    """A form whose structure is not one this project's training makes."""


def check(model: Any, n_features: int, n_classes: int) -> None:
    """`model` (an onnx ModelProto) as the training makes them, for an input of `n_features`
    columns and `n_classes` labels; StructureRefused says the first thing that is not."""
    constants = _constants(model)
    for node in model.graph.node:
        if (node.domain, node.op_type) not in ALLOWED_OPERATORS:
            operator = f"{node.domain or 'ai.onnx'}.{node.op_type}"
            raise StructureRefused(f"operator {operator}: not allowed")
        attributes = {a.name: a for a in node.attribute}
        if node.op_type == "TreeEnsembleClassifier":
            check_tree_ensemble(_values(attributes), n_features, n_classes)
        elif node.op_type == "LinearClassifier":
            check_linear(_values(attributes), n_features, n_classes)
        elif node.op_type in ("MatMul", "Add"):
            _check_scores(node, constants, n_features, n_classes)


def _constants(model: Any) -> dict[str, np.ndarray]:
    """The graph's initializers; every number among them finite."""
    from onnx import numpy_helper

    found = {}
    for tensor in model.graph.initializer:
        value = numpy_helper.to_array(tensor)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise StructureRefused(f"constant '{tensor.name}' holds a value that is not finite")
        found[tensor.name] = value
    return found


def _check_scores(
    node: Any, constants: dict[str, np.ndarray], n_features: int, n_classes: int
) -> None:
    """The linear scores of a float64 form: `features` x [features, classes] + [1, classes]."""
    weights = [constants[name] for name in node.input if name in constants]
    expected = (n_features, n_classes) if node.op_type == "MatMul" else (1, n_classes)
    if len(weights) != 1 or weights[0].shape != expected:
        shapes = [w.shape for w in weights]
        raise StructureRefused(f"{node.op_type} takes constants {shapes}, not one {expected}")


def _values(attributes: dict[str, Any]) -> dict[str, Any]:
    from onnx import helper

    return {name: helper.get_attribute_value(a) for name, a in attributes.items()}


def check_tree_ensemble(values: dict[str, Any], n_features: int, n_classes: int) -> None:
    labels = values.get("classlabels_strings") or values.get("classlabels_int64s") or []
    if len(labels) != n_classes:
        raise StructureRefused(f"the trees name {len(labels)} classes, the form {n_classes}")
    nodes = _node_table(values)
    trees = sorted(set(nodes["tree"].tolist()))
    leaves: set[tuple[int, int]] = set()
    for tree in trees:
        leaves |= {(tree, n) for n in _checked_tree(nodes, tree, n_features)}
    classes = _aligned(values, ("class_treeids", "class_nodeids", "class_ids", "class_weights"))
    for tree, node, label, weight in zip(*classes, strict=True):
        if (int(tree), int(node)) not in leaves:
            raise StructureRefused(f"a class weight on tree {tree} node {node}, not a leaf")
        if not 0 <= int(label) < n_classes:
            raise StructureRefused(f"a leaf's class {label} is outside 0..{n_classes - 1}")
        if not np.isfinite(weight):
            raise StructureRefused(f"a leaf's weight is {weight}")


def _aligned(values: dict[str, Any], names: Sequence[str]) -> list[np.ndarray]:
    """The named attributes as arrays of one length (the `nodes_values_as_tensor` forms too)."""
    arrays = []
    for name in names:
        found = values.get(name)
        if found is None and name in ("nodes_values", "class_weights"):
            found = values.get(f"{name}_as_tensor")
            if found is not None:
                from onnx import numpy_helper

                found = numpy_helper.to_array(found).ravel()
        if found is None:
            raise StructureRefused(f"the trees have no '{name}'")
        arrays.append(np.asarray(found))
    if len({len(a) for a in arrays}) != 1:
        raise StructureRefused(f"the trees' {', '.join(names)} differ in length")
    return arrays


def _node_table(values: dict[str, Any]) -> dict[str, np.ndarray]:
    names = (
        "nodes_treeids",
        "nodes_nodeids",
        "nodes_modes",
        "nodes_featureids",
        "nodes_values",
        "nodes_truenodeids",
        "nodes_falsenodeids",
    )
    tree, node, modes, feature, threshold, true, false = _aligned(values, names)
    decoded = np.array([m.decode() if isinstance(m, bytes) else str(m) for m in modes])
    return {
        "tree": tree.astype(np.int64),
        "node": node.astype(np.int64),
        "mode": decoded,
        "feature": feature.astype(np.int64),
        "threshold": threshold.astype(np.float64),
        "true": true.astype(np.int64),
        "false": false.astype(np.int64),
    }


def _checked_tree(nodes: dict[str, np.ndarray], tree: int, n_features: int) -> list[int]:
    """One tree's structure; its leaves."""
    rows = np.flatnonzero(nodes["tree"] == tree)
    ids = nodes["node"][rows]
    count = len(rows)
    if sorted(ids.tolist()) != list(range(count)):
        raise StructureRefused(f"tree {tree}: node ids are not 0..{count - 1}")
    at = {int(i): int(r) for i, r in zip(ids, rows, strict=True)}
    children: dict[int, tuple[int, int]] = {}
    leaves = []
    for node_id, row in at.items():
        mode = str(nodes["mode"][row])
        if mode == LEAF:
            leaves.append(node_id)
            continue
        if mode not in BRANCH_MODES:
            raise StructureRefused(f"tree {tree} node {node_id}: mode {mode!r}")
        if not 0 <= nodes["feature"][row] < n_features:
            raise StructureRefused(
                f"tree {tree} node {node_id}: feature {nodes['feature'][row]} of {n_features}"
            )
        if not np.isfinite(nodes["threshold"][row]):
            threshold = nodes["threshold"][row]
            raise StructureRefused(f"tree {tree} node {node_id}: threshold {threshold}")
        pair = (int(nodes["true"][row]), int(nodes["false"][row]))
        if not all(0 <= child < count for child in pair):
            raise StructureRefused(
                f"tree {tree} node {node_id}: children {pair} outside 0..{count - 1}"
            )
        children[node_id] = pair
    _reached_once(tree, children, count)
    return leaves


def _reached_once(tree: int, children: dict[int, tuple[int, int]], count: int) -> None:
    """Every node reached exactly once from the root (node 0): no cycle, no shared child,
    nothing unreachable."""
    seen = [False] * count
    pending = [0]
    while pending:
        node = pending.pop()
        if seen[node]:
            raise StructureRefused(f"tree {tree}: node {node} is reached twice (a cycle or a join)")
        seen[node] = True
        pending.extend(children.get(node, ()))
    if not all(seen):
        raise StructureRefused(f"tree {tree}: node {seen.index(False)} is never reached")


def check_linear(values: dict[str, Any], n_features: int, n_classes: int) -> None:
    labels = values.get("classlabels_strings") or values.get("classlabels_ints") or []
    if len(labels) != n_classes:
        raise StructureRefused(f"the linear model names {len(labels)} classes, not {n_classes}")
    coefficients = np.asarray(values.get("coefficients") or [], dtype=np.float64)
    intercepts = np.asarray(values.get("intercepts") or [], dtype=np.float64)
    # Two classes may be one row of coefficients (scikit-learn's binary form).
    rows = 1 if n_classes == 2 and len(coefficients) == n_features else n_classes
    if coefficients.size != rows * n_features or intercepts.size != rows:
        raise StructureRefused(
            f"the linear model has {coefficients.size} coefficients and {intercepts.size} "
            f"intercepts, not {rows} x {n_features} and {rows}"
        )
    if not (np.isfinite(coefficients).all() and np.isfinite(intercepts).all()):
        raise StructureRefused("the linear model has a coefficient that is not finite")
