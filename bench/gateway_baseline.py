"""The baseline of bench/gateway.py: the reference implementation's shape, in one process.

One FastAPI app under uvicorn (1 worker, the gateway's own server knobs: uvloop, httptools, no
access log) that holds the fitted transformation and both champions in memory and, per request,
validates the record with the same contract, builds a pandas DataFrame from it, runs the fitted
scikit-learn pipeline and calls both models' `predict`. The routes are plain `def` (FastAPI runs
them in its thread pool, as the reference did), so the event loop is never blocked by them.

    .venv/bin/python bench/gateway_baseline.py --port P [--year 2024]

The stack's environment (MLFLOW_TRACKING_URI, the lake's settings) must be exported.
"""

from __future__ import annotations

import argparse
import os
import warnings
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from crimes import contract, registry
from crimes.contract import CrimeFeatures
from crimes.gateway.schemas import PredictRequest, PredictResponse
from crimes.lake import datasets
from crimes.lake.storage import Lake
from crimes.transformation import fitting


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: list[CrimeFeatures] = Field(min_length=1, max_length=100_000)


def create_app(year: int) -> FastAPI:
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    # The reference fitted the pipeline in the serving process's image; the lake keeps only
    # its document, so the baseline refits it on the published train split (deterministic:
    # the same seed gives the same fit, which the document's version confirms).
    final = datasets.load_final(Lake(), year)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fitted, _ = fitting.fit_transform(final.features_train, final.y_train)
    if fitting.export(fitted).version != final.transformation_version:
        raise SystemExit("the refitted transformation is not the published one")
    models: dict[str, Any] = {
        kind: mlflow.sklearn.load_model(registry.model_uri(name))
        for kind, name in registry.MODELS.items()
    }
    app = FastAPI(title="baseline: the reference's in-process shape")

    def codes(records: list[CrimeFeatures]) -> list[PredictResponse]:
        frame = contract.features_frame(records)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            matrix = fitting.transform(fitted, frame).to_numpy()
        dtc = models["dtc"].predict(matrix)
        lda = models["lda"].predict(matrix)
        return [
            PredictResponse(dtc_fbi_code_output=str(d), lda_fbi_code_output=str(a))
            for d, a in zip(dtc, lda, strict=True)
        ]

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict", response_model=PredictResponse)
    def predict(request: PredictRequest) -> PredictResponse:
        return codes([request.features])[0]

    @app.post("/predict/batch", response_model=list[PredictResponse])
    def predict_batch(request: BatchRequest) -> list[PredictResponse]:
        return codes(request.features)

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--year", type=int, default=2024)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.year),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        workers=1,
    )


if __name__ == "__main__":
    main()
