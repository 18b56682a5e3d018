"""The environment variables that carry the object store's five identities' keys, as every
deployment must hand them to whatever writes SeaweedFS' identities file."""

from __future__ import annotations

IDENTITY_VARIABLES = frozenset(
    f"{prefix}_{kind}_KEY"
    for prefix in ("CRIMES_OBJECT_STORE_ADMIN", "CRIMES_LAKE_WRITER", "CRIMES_LAKE_READER",
                   "MLFLOW_STORE", "CRIMES_PREDICTION_LOG")
    for kind in ("ACCESS", "SECRET")
)  # fmt: skip
