"""The ETL, stage by stage: extract -> preprocess -> split and transform -> publish.

Each stage reads its input from the data lake and writes content-addressed output there, and
returns a small typed summary (passed between the Airflow tasks as a dict). Nothing becomes
visible to readers until `publish` writes the year's manifest pointer, after the MLflow run is
logged; a failure anywhere before that leaves the previously published data untouched.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Self

import pandas as pd

from crimes import contract
from crimes.etl.extract import extract
from crimes.etl.preprocess import PreprocessReport, check_columns, preprocess
from crimes.etl.settings import EtlSettings
from crimes.etl.split import MIN_STRATIFIED_ROWS, split
from crimes.lake import layout, storage
from crimes.lake.storage import Lake
from crimes.ops.logs import get_logger
from crimes.registry import tracking
from crimes.settings import TrackingSettings
from crimes.transformation import document, fitting

log = get_logger(__name__)


class EtlError(RuntimeError):
    """The ETL refused its input; nothing was published."""


Files = dict[str, dict[str, Any]]


class _Summary:
    """A stage's summary, as the dict an Airflow task passes to the next one and back."""

    def as_dict(self) -> dict[str, Any]:
        assert is_dataclass(self)
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Self:
        return cls(**value)


@dataclass(frozen=True)
class Extracted(_Summary):
    year: int
    snapshot: str
    source: str
    format: str
    pages: int
    rows_raw: int
    files: Files
    seconds: float

    @property
    def synthetic(self) -> bool:
        # Generated rows must never pass for real crimes, in MLflow or in the manifest.
        return self.format == "synthetic"


@dataclass(frozen=True)
class Preprocessed(_Summary):
    rows_in: int
    rows_out: int
    dropped: dict[str, int]
    files: Files
    seconds: float


@dataclass(frozen=True)
class FinalSet(_Summary):
    dataset: str
    transformation_version: str
    rows_train: int
    rows_test: int
    classes: list[str]
    train_only_classes: list[str]
    n_transformed_features: int
    files: dict[str, Files]
    seconds: float


def extract_stage(settings: EtlSettings, lake: Lake) -> Extracted:
    """Download (or read) the raw rows and store them, as text, under their snapshot id."""
    started = time.perf_counter()
    extracted = extract(settings)
    if extracted.rows == 0:
        raise EtlError(f"the source {extracted.source} returned no rows for {settings.year}")
    # Refused before anything is stored: a file that is not crime records never enters the lake.
    check_columns(extracted.frame.columns)
    data = storage.parquet_bytes(extracted.frame)
    snapshot = "snap-" + storage.sha256(data)[:16]
    files = storage.write_files(
        lake, layout.raw_prefix(settings.year, snapshot), {"crimes.parquet": data}
    )
    summary = Extracted(
        year=settings.year,
        snapshot=snapshot,
        source=extracted.source,
        format=extracted.fmt,
        pages=extracted.pages,
        rows_raw=extracted.rows,
        files=files,
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info("etl.extracted", **{k: v for k, v in summary.as_dict().items() if k != "files"})
    return summary


def preprocess_stage(settings: EtlSettings, lake: Lake, extracted: Extracted) -> Preprocessed:
    started = time.perf_counter()
    raw = storage.read_parquet_bytes(storage.read_file(lake, extracted.files["crimes.parquet"]))
    features, report = preprocess(raw)
    if report.rows_out < settings.min_rows:
        raise EtlError(
            f"only {report.rows_out} usable rows of {report.rows_in} after preprocessing "
            f"(minimum {settings.min_rows}); dropped: {report.dropped or 'none'}"
        )
    files = storage.write_files(
        lake,
        layout.preprocessed_prefix(settings.year, extracted.snapshot),
        {"crimes.parquet": storage.parquet_bytes(features)},
    )
    summary = Preprocessed(
        rows_in=report.rows_in,
        rows_out=report.rows_out,
        dropped=report.dropped,
        files=files,
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info("etl.preprocessed", rows_in=report.rows_in, rows_out=report.rows_out)
    return summary


def final_set_stage(
    settings: EtlSettings, lake: Lake, extracted: Extracted, preprocessed: Preprocessed
) -> FinalSet:
    """Split, fit the transformation on the train split, write final/ and data_info/."""
    started = time.perf_counter()
    data = storage.read_parquet_bytes(storage.read_file(lake, preprocessed.files["crimes.parquet"]))
    parts = split(data, settings.test_size, settings.seed)
    features = list(contract.FEATURES)
    with warnings.catch_warnings():
        # The rare-class policy is the split's; sklearn's fold-size warning repeats it.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        fitted, x_train = fitting.fit_transform(
            parts.train[features], parts.train[contract.TARGET], seed=settings.seed
        )
    x_test = fitting.transform(fitted, parts.test[features])
    transformation = fitting.export(fitted)
    version = transformation.version
    frames = {
        "X_train": x_train,
        "X_test": x_test,
        "y_train": parts.train[[contract.TARGET]],
        "y_test": parts.test[[contract.TARGET]],
        "features_train": parts.train[features],
        "features_test": parts.test[features],
    }
    final_bytes = {f"{name}.parquet": storage.parquet_bytes(f) for name, f in frames.items()}
    info = data_info(
        settings,
        extracted,
        preprocessed,
        data,
        parts.train,
        parts.test,
        version,
        list(x_train.columns),
        parts.train_only_classes,
    )
    info_bytes = storage.canonical_json(info)
    content = {
        "final": {n: storage.sha256(b) for n, b in final_bytes.items()},
        "data_info.json": storage.sha256(info_bytes),
        "transformation_version": version,
    }
    dataset = "ds-" + storage.sha256(storage.canonical_json(content))[:16]
    info_prefix = layout.data_info_prefix(settings.year, dataset)
    files = {
        "final": storage.write_files(
            lake, layout.final_prefix(settings.year, dataset), final_bytes
        ),
        "data_info": {
            **storage.write_files(
                lake,
                info_prefix,
                {"data_info.json": info_bytes, document.FILE_NAME: transformation.data},
            ),
        },
    }
    summary = FinalSet(
        dataset=dataset,
        transformation_version=version,
        rows_train=len(parts.train),
        rows_test=len(parts.test),
        classes=info["target"]["classes"],
        train_only_classes=list(parts.train_only_classes),
        n_transformed_features=int(x_train.shape[1]),
        files=files,
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info(
        "etl.final",
        dataset=dataset,
        transformation_version=version,
        rows_train=len(parts.train),
        rows_test=len(parts.test),
    )
    return summary


def data_info(
    settings: EtlSettings,
    extracted: Extracted,
    preprocessed: Preprocessed,
    data: pd.DataFrame,
    train: pd.DataFrame,
    test: pd.DataFrame,
    version: str,
    transformed_columns: list[str],
    train_only_classes: tuple[str, ...],
) -> dict[str, Any]:
    """What a reader needs to know about the published set; no timestamps, so it is a pure
    function of the input and reruns are byte-identical."""
    categories = {
        name: sorted(data[name].unique().tolist()) for name in contract.CATEGORICAL_FEATURES
    }
    return {
        "year": settings.year,
        "columns": list(contract.FEATURES),
        "dtypes": dict(contract.FEATURE_DTYPES),
        "categorical_columns": list(contract.CATEGORICAL_FEATURES),
        "encodings": {s.name: s.encoding for s in contract.FEATURE_SPECS},
        "categories": categories,
        "target": {
            "column": contract.TARGET,
            "classes": sorted(data[contract.TARGET].unique().tolist()),
            "counts": {
                str(k): int(v) for k, v in data[contract.TARGET].value_counts().sort_index().items()
            },
        },
        "rows": {
            "raw": extracted.rows_raw,
            "preprocessed": preprocessed.rows_out,
            "dropped": preprocessed.dropped,
            "train": len(train),
            "test": len(test),
        },
        "split": {
            "test_size": settings.test_size,
            "seed": settings.seed,
            "stratified_by": contract.TARGET,
            "min_stratified_rows": MIN_STRATIFIED_ROWS,
            "train_only_classes": list(train_only_classes),
        },
        "snapshot": extracted.snapshot,
        "transformation": {
            "version": version,
            "output_columns": transformed_columns,
            "document": document.FILE_NAME,
            "description": (
                "median impute + MinMax: latitude, longitude; one-hot: arrest, domestic, "
                "dia_semana; multi-class target encoding + MinMax: the other eleven"
            ),
        },
    }


def publish_stage(
    settings: EtlSettings,
    lake: Lake,
    extracted: Extracted,
    preprocessed: Preprocessed,
    final: FinalSet,
    tracking_settings: TrackingSettings | None = None,
    orchestrator_run: str | None = None,
) -> dict[str, Any]:
    """Log the ETL run to MLflow, then flip the year's manifest pointer to the new set; the
    published manifest."""
    pointer = layout.pointer_key(settings.year)
    previous = storage.read_pointer(lake, pointer) if lake.exists(pointer) else None
    tags = _run_tags(settings, extracted, final, orchestrator_run)
    with tracking.run(f"etl-{settings.year}-{final.dataset}", tags, tracking_settings) as run:
        _log_etl_run(settings, lake, extracted, preprocessed, final)
        manifest = _manifest(settings, extracted, preprocessed, final, run.info.run_id, previous)
        _log_text(json.dumps(manifest, indent=1, sort_keys=True), "manifest.json")
        # Each dataset keeps its own manifest, so training and promotion can read any of them.
        lake.write_json(layout.dataset_manifest_key(settings.year, final.dataset), manifest)
        storage.publish_pointer(lake, pointer, manifest)
    log.info(
        "etl.published",
        pointer=lake.url(pointer),
        dataset=final.dataset,
        etl_run_id=manifest["etl_run_id"],
    )
    return manifest


def _run_tags(
    settings: EtlSettings, extracted: Extracted, final: FinalSet, orchestrator_run: str | None
) -> dict[str, str]:
    tags = {
        "stage": "etl",
        "year": str(settings.year),
        "snapshot": extracted.snapshot,
        "dataset": final.dataset,
        "transformation_version": final.transformation_version,
        "data": "synthetic" if extracted.synthetic else "real",
    }
    if orchestrator_run:
        tags["airflow_run_id"] = orchestrator_run
    return tags


def _log_etl_run(
    settings: EtlSettings,
    lake: Lake,
    extracted: Extracted,
    preprocessed: Preprocessed,
    final: FinalSet,
) -> None:
    """The run's input data set, parameters, row counts and the data_info artifacts."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    features = storage.read_parquet_bytes(
        storage.read_file(lake, preprocessed.files["crimes.parquet"])
    )
    mlflow.log_input(
        from_pandas(
            features,
            source=lake.url(preprocessed.files["crimes.parquet"]["key"]),
            name=f"chicago_crimes_{settings.year}",
            targets=contract.TARGET,
        ),
        context="etl",
    )
    mlflow.log_params(
        {
            "year": settings.year,
            "source": extracted.source,
            "source_format": extracted.format,
            "test_size": settings.test_size,
            "seed": settings.seed,
            "transformation_version": final.transformation_version,
            "dataset": final.dataset,
            "snapshot": extracted.snapshot,
        }
    )
    metrics = {
        "rows_raw": extracted.rows_raw,
        "rows_preprocessed": preprocessed.rows_out,
        "rows_dropped": preprocessed.rows_in - preprocessed.rows_out,
        "rows_train": final.rows_train,
        "rows_test": final.rows_test,
        "n_classes": len(final.classes),
        "n_transformed_features": final.n_transformed_features,
        "extract_seconds": extracted.seconds,
        "preprocess_seconds": preprocessed.seconds,
        "final_seconds": final.seconds,
    }
    metrics.update({f"dropped_{k}": v for k, v in preprocessed.dropped.items()})
    mlflow.log_metrics(metrics)
    info_files = final.files["data_info"]
    _log_text(
        storage.read_file(lake, info_files["data_info.json"]).decode(), "data_info/data_info.json"
    )
    _log_text(
        json.dumps({"transformation_version": final.transformation_version}),
        "data_info/transformation_version.json",
    )
    _log_bytes(
        storage.read_file(lake, info_files[document.FILE_NAME]), "data_info", document.FILE_NAME
    )


def _manifest(
    settings: EtlSettings,
    extracted: Extracted,
    preprocessed: Preprocessed,
    final: FinalSet,
    etl_run_id: str,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """The document readers follow to the new set."""
    return {
        "year": settings.year,
        "dataset": final.dataset,
        "snapshot": extracted.snapshot,
        "transformation_version": final.transformation_version,
        "content_hash": final.dataset,
        "etl_run_id": etl_run_id,
        "rows": {
            "raw": extracted.rows_raw,
            "preprocessed": preprocessed.rows_out,
            "train": final.rows_train,
            "test": final.rows_test,
        },
        "classes": final.classes,
        "source": extracted.source,
        "synthetic": extracted.synthetic,
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "previous_dataset": previous["dataset"] if previous else None,
        "files": {"raw": extracted.files, "preprocessed": preprocessed.files, **final.files},
    }


def _log_text(text: str, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(text, artifact_file)


def _log_bytes(data: bytes, artifact_path: str, name: str) -> None:
    import tempfile
    from pathlib import Path

    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def run_etl(
    settings: EtlSettings | None = None,
    lake: Lake | None = None,
    tracking_settings: TrackingSettings | None = None,
) -> dict[str, Any]:
    """The whole ETL in one process (what `crimes etl` runs; Airflow runs the stages as tasks)."""
    settings = settings or EtlSettings()
    lake = lake or Lake()
    started = time.perf_counter()
    extracted = extract_stage(settings, lake)
    preprocessed = preprocess_stage(settings, lake, extracted)
    final = final_set_stage(settings, lake, extracted, preprocessed)
    manifest = publish_stage(settings, lake, extracted, preprocessed, final, tracking_settings)
    log.info("etl.done", seconds=round(time.perf_counter() - started, 3))
    return manifest


__all__ = [
    "EtlError",
    "Extracted",
    "FinalSet",
    "PreprocessReport",
    "Preprocessed",
    "extract_stage",
    "final_set_stage",
    "preprocess_stage",
    "publish_stage",
    "run_etl",
]
