"""Benchmark (not a test): the whole ETL on the full real 2024 file, on real local services.

Starts a throw-away stack (SeaweedFS S3 + MLflow on PostgreSQL), serves the file through the portal
double, runs the ETL in one process and prints the wall time of each stage. The target on this
2-core machine is at most 2 minutes for 259,129 rows.

    .venv/bin/python bench/etl_full.py [--data FILE] [--object-store seaweedfs|folder]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from _stack import data_file, throwaway_stack

from crimes.etl import pipeline
from crimes.etl.settings import EtlSettings
from crimes.lake.storage import Lake
from crimes.local.portal_double import PortalDouble


def publish_full_year(data: str) -> tuple[dict[str, Any], float]:
    """Run the ETL on the whole file served by the portal double; the manifest and wall time."""
    with PortalDouble(data) as portal:
        started = time.perf_counter()
        os.environ.update(portal.admitted)
        manifest = pipeline.run_etl(EtlSettings(source=portal.url, year=2024), Lake())
        return manifest, time.perf_counter() - started


def report(manifest: dict[str, Any], wall: float) -> None:
    import mlflow

    metrics = mlflow.MlflowClient().get_run(manifest["etl_run_id"]).data.metrics
    rows = manifest["rows"]
    print(
        f"rows raw {rows['raw']:,}  preprocessed {rows['preprocessed']:,}  train "
        f"{rows['train']:,}  test {rows['test']:,}  classes {len(manifest['classes'])}"
    )
    dropped = [
        f"{k.removeprefix('dropped_')}={int(v)}"
        for k, v in sorted(metrics.items())
        if k.startswith("dropped_")
    ]
    print("dropped: " + (", ".join(dropped) or "none"))
    for stage in ("extract", "preprocess", "final"):
        print(f"{stage:>10}: {metrics[f'{stage}_seconds']:.1f} s")
    print(
        "ETL wall time (extract from the portal double -> published + MLflow run): "
        f"{wall:.1f} s  [target <= 120 s]"
    )
    print(f"dataset {manifest['dataset']}  transformation {manifest['transformation_version']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=data_file())
    parser.add_argument("--object-store", choices=("seaweedfs", "folder"), default="seaweedfs")
    args = parser.parse_args()
    with throwaway_stack(args.object_store):
        report(*publish_full_year(args.data))


if __name__ == "__main__":
    main()
