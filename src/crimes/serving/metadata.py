"""What a model service says about its loaded model in ModelMetadata (the protocol encodes it)."""

from __future__ import annotations

from datetime import UTC, datetime

from crimes.protocol import inference
from crimes.serving.model import PLATFORM, LoadedModel


def model_info(model: LoadedModel, max_rows: int) -> inference.ModelInfo:
    return inference.ModelInfo(
        name=model.name,
        version=model.version,
        platform=PLATFORM,
        n_features=model.n_features,
        transformation_version=model.transformation_version,
        run_id=model.run_id,
        classes=model.classes,
        feature_names=model.feature_names,
        source=str(model.source),
        location=model.location,
        alias=model.alias,
        model_class=model.model_class,
        loaded_at=datetime.fromtimestamp(model.loaded_at, UTC).isoformat(),
        max_batch_rows=max_rows,
        input_datatype=model.input_datatype,
        label_index=True,
    )
