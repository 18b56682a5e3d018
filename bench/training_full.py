"""Benchmark (not a test): the whole training DAG on the full real 2024 data, on real services.

Publishes the full year with the ETL (SeaweedFS S3 + MLflow on PostgreSQL), then times
`airflow dags test train_chicago_crimes` (Airflow metadata in PostgreSQL) with the default trial
count, and prints both models' test metrics. Target on this 2-core machine: at most 10 minutes.

    .venv/bin/python bench/training_full.py [--trials N] [--cv-folds K]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from _stack import POSTGRES_URL, data_file, throwaway_stack
from etl_full import publish_full_year

from crimes import registry
from crimes.local import airflow_runner
from crimes.local.settings import StackSettings
from crimes.local.stack import backend
from crimes.settings import TrackingSettings
from crimes.training.settings import TrainingSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=data_file())
    parser.add_argument("--trials", type=int, default=TrainingSettings().trials)
    parser.add_argument("--cv-folds", type=int, default=TrainingSettings().cv_folds)
    args = parser.parse_args()
    with throwaway_stack() as env, tempfile.TemporaryDirectory() as home:
        manifest, wall = publish_full_year(args.data)
        print(f"ETL: {wall:.1f} s, {manifest['rows']['train']:,} train rows")
        database = StackSettings(
            postgres_url=POSTGRES_URL, mlflow_database=f"crimes_airflow_{uuid.uuid4().hex[:8]}"
        )
        backend.ensure_database(database)
        try:
            airflow = airflow_runner.environment(
                Path(home),
                airflow_runner.metadata_url(POSTGRES_URL, database.mlflow_database, Path(home)),
                extra=env,
            )
            airflow_runner.migrate(airflow)
            started = time.perf_counter()
            result = airflow_runner.dags_test(
                airflow,
                "train_chicago_crimes",
                conf={"trials": args.trials, "cv_folds": args.cv_folds},
                timeout=1800,
            )
            wall = time.perf_counter() - started
            if result.returncode != 0:
                raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])
        finally:
            backend.drop_database(database)
        import mlflow

        client = mlflow.MlflowClient(TrackingSettings().tracking_uri)
        for kind, name in registry.MODELS.items():
            champion = client.get_model_version_by_alias(name, registry.CHAMPION)
            assert champion.run_id is not None
            metrics = client.get_run(champion.run_id).data.metrics
            shown = "  ".join(
                f"{k} {metrics[k]:.6f}"
                for k in ("test_accuracy", "test_f1_weighted", "test_f1_macro", "cv_f1_weighted")
                if k in metrics
            )
            print(
                f"{kind}: {name} v{champion.version}  {shown}  fit {metrics['fit_seconds']:.0f} s"
            )
        print(
            f"training DAG wall time ({args.trials} trials, {args.cv_folds}-fold CV, "
            f"airflow dags test): {wall:.1f} s  [target <= 600 s]"
        )


if __name__ == "__main__":
    main()
