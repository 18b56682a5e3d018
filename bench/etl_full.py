"""Benchmark (not a test): the whole ETL on the full real 2024 file, on real local services.

Starts a throw-away stack (Swift S3 + MLflow on PostgreSQL), serves the file through the portal
double, runs the ETL in one process and prints the wall time of each stage. The target on this
2-core machine is at most 2 minutes for 259,129 rows.

    .venv/bin/python bench/etl_full.py [--data FILE] [--object-store swift|folder]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

from crimes import stack
from crimes.etl import pipeline
from crimes.portal_double import PortalDouble
from crimes.settings import EtlSettings, StackSettings, lake_settings, tracking_settings
from crimes.stack import backend
from crimes.storage import Lake

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/chicago_crimes_2024.csv.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=os.environ.get("CRIMES_TEST_DATA", str(DEFAULT_DATA)))
    parser.add_argument("--object-store", choices=("swift", "folder"), default="swift")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="crimes-bench-") as state:
        settings = StackSettings(
            state_dir=Path(state),
            object_store=args.object_store,
            postgres_url=args.postgres_url or None,
            mlflow_database=f"crimes_bench_{uuid.uuid4().hex[:8]}",
            mlflow_port=stack.free_port(),
            swift_port=stack.free_port(),
            swift_backend_base_port=stack.free_port_block(3),
        )
        started = time.perf_counter()
        stack.up(settings)
        print(f"stack up: {time.perf_counter() - started:.1f} s")
        try:
            os.environ.update(stack.env_exports(settings))
            lake_settings.cache_clear()
            tracking_settings.cache_clear()
            with PortalDouble(args.data) as portal:
                etl = EtlSettings(source=portal.url, year=2024)
                started = time.perf_counter()
                manifest = pipeline.run_etl(etl, Lake())
                wall = time.perf_counter() - started
            import mlflow

            metrics = mlflow.MlflowClient().get_run(manifest["etl_run_id"]).data.metrics
            print(
                f"rows raw {manifest['rows']['raw']:,}  preprocessed "
                f"{manifest['rows']['preprocessed']:,}  train {manifest['rows']['train']:,}  "
                f"test {manifest['rows']['test']:,}  classes {len(manifest['classes'])}"
            )
            print(
                "dropped: "
                + ", ".join(
                    f"{k.removeprefix('dropped_')}={int(v)}"
                    for k, v in sorted(metrics.items())
                    if k.startswith("dropped_")
                )
                or "none"
            )
            for stage in ("extract", "preprocess", "final"):
                print(f"{stage:>10}: {metrics[f'{stage}_seconds']:.1f} s")
            print(
                f"ETL wall time (extract from the portal double -> published + MLflow run): "
                f"{wall:.1f} s  [target <= 120 s]"
            )
            print(
                f"dataset {manifest['dataset']}  "
                f"transformation {manifest['transformation_version']}"
            )
        finally:
            stack.down(settings)
            if settings.postgres_url:
                backend.drop_database(settings)


if __name__ == "__main__":
    main()
