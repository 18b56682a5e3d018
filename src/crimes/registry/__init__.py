"""The model registry's conventions: the registered models, their aliases, the tags of a version.

Registered models live in MLflow (`dtc_model_prod`, `lda_model_prod`, the reference's names);
the version serving in production carries the alias `champion`, a version that lost its
comparison `challenger`. Each version is tagged with what it was made from (`Tag`).
`bundles` is the fallback copy of a version; `tracking` the experiment's runs.
"""

from __future__ import annotations

from typing import Final

from crimes.transformation import document

MODELS: Final = {"dtc": "dtc_model_prod", "lda": "lda_model_prod"}
CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"


class Tag:
    """Tag keys on every registered model version (and on its training run)."""

    TRANSFORMATION_VERSION: Final = "transformation_version"
    ETL_RUN_ID: Final = "etl_run_id"
    DATASET: Final = "dataset"
    YEAR: Final = "year"
    DATA_SNAPSHOT: Final = "data_snapshot"
    SYNTHETIC: Final = "synthetic_data"
    HYPERPARAMETERS: Final = "hyperparameters"
    TEST_ACCURACY: Final = "test_accuracy"
    TEST_F1_WEIGHTED: Final = "test_f1_weighted"
    TEST_F1_MACRO: Final = "test_f1_macro"
    # The content hash of the training split's feature distribution logged with the version.
    DRIFT_REFERENCE: Final = "drift_reference"
    # The SHA-256 of the model's files as registered: a model service loads only files that
    # still have it (registry.artifacts.directory_sha256).
    MODEL_SHA256: Final = "model_sha256"
    # The version's ONNX form, what the model services run (registry.onnx_form): its logged
    # model (models:/m-...), the SHA-256 of its files, and on how many rows its labels were
    # found equal to the classifier's before it was attached.
    ONNX_MODEL: Final = "onnx_model"
    ONNX_SHA256: Final = "onnx_sha256"
    ONNX_ROWS_COMPARED: Final = "onnx_rows_compared"
    # The training's Ed25519 signature on the form's digest, run and transformation
    # (registry.signing): a registry writer without the training's key cannot make one.
    ONNX_SIGNATURE: Final = "onnx_signature"
    # Its test split's accuracy per confidence bin (feedback.calibration), for the label-free
    # estimate of its served accuracy.
    CONFIDENCE_CALIBRATION: Final = "confidence_calibration"
    # What the evaluation of served predictions last found for it (feedback.results): its
    # realized accuracy on the labelled live records, how many, and the label-free estimate.
    SERVED_ACCURACY: Final = "served_accuracy"
    SERVED_LABELLED: Final = "served_labelled"
    SERVED_PREDICTIONS: Final = "served_predictions"
    SERVED_ESTIMATE: Final = "served_estimate"


# The transformation's document as every training run logs it: this file in this folder.
TRANSFORMATION_FILE: Final = document.FILE_NAME
TRANSFORMATION_ARTIFACT_DIR: Final = "transformation"
TRANSFORMATION_ARTIFACT: Final = f"{TRANSFORMATION_ARTIFACT_DIR}/{TRANSFORMATION_FILE}"


# The reference distribution of the version's training split (crimes.drift.reference).
DRIFT_REFERENCE_ARTIFACT: Final = "drift/reference.json"


def model_uri(name: str, alias: str = CHAMPION) -> str:
    return f"models:/{name}@{alias}"
