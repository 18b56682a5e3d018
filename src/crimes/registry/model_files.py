"""A fitted classifier as bytes, and back, through skops only.

A pickle runs whatever code it names, so no model file is ever unpickled: the registry's logged
scikit-learn models are skops files (what the training reads back, to rescore a champion; the
model services run each version's ONNX form instead, `registry.onnx_form`), and they are read
with the project's own list of trusted types, not one a file or its MLmodel declares about
itself. A file naming any other type is refused before anything in it is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml

# What skops does not trust by default and the project's two classifiers are made of: a
# decision tree's node storage. Linear Discriminant Analysis needs nothing beyond the defaults.
TRUSTED_TYPES: Final = ("sklearn.tree._tree.Tree",)
MODEL_FILE: Final = "model.skops"
SERIALIZATION_FORMAT: Final = "skops"


class UntrustedModelFile(ValueError):
    """A model file that cannot be read safely: not skops, or naming a type not trusted."""


def dumps(model: Any) -> bytes:
    import skops.io

    return bytes(skops.io.dumps(model))


def loads(data: bytes, source: str) -> Any:
    """The classifier in a skops file, once every type it names is trusted."""
    import skops.io

    try:
        untrusted = set(skops.io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES)
    except Exception as error:
        raise UntrustedModelFile(f"{source}: not a skops model file ({error})") from error
    if untrusted:
        raise UntrustedModelFile(
            f"{source}: refused: it names types the project does not trust: "
            f"{', '.join(sorted(untrusted))}"
        )
    try:
        return skops.io.loads(data, trusted=list(TRUSTED_TYPES))
    except Exception as error:
        raise UntrustedModelFile(f"{source}: the skops file does not load ({error})") from error


def load_logged(model_dir: Path, source: str) -> Any:
    """The classifier of an MLflow sklearn model directory, read by `loads` (never by MLflow's
    loader, which unpickles a model logged as a pickle and trusts the types its MLmodel lists)."""
    try:
        described = yaml.safe_load((Path(model_dir) / "MLmodel").read_text())
        flavor = described["flavors"]["sklearn"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as error:
        raise UntrustedModelFile(f"{source}: no sklearn flavor in its MLmodel ({error})") from error
    if flavor.get("serialization_format") != SERIALIZATION_FORMAT:
        raise UntrustedModelFile(
            f"{source}: refused: logged as {flavor.get('serialization_format')!r}; "
            f"only {SERIALIZATION_FORMAT!r} model files are loaded"
        )
    name = str(flavor.get("pickled_model", MODEL_FILE))
    path = (Path(model_dir) / name).resolve()
    if not path.is_relative_to(Path(model_dir).resolve()) or not path.is_file():
        raise UntrustedModelFile(f"{source}: no model file {name!r} in the model's directory")
    return loads(path.read_bytes(), source)
