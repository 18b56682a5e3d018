"""The local stack of real services for end-to-end tests, started once per session.

SeaweedFS' S3 API as the data lake, MLflow on PostgreSQL with artifacts in SeaweedFS, a throw-away
database per session, free ports, and every process stopped at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crimes.lake.settings import lake_settings
from crimes.local import portal_double, stack
from crimes.local.portal_double import PortalDouble
from crimes.local.settings import StackSettings
from crimes.local.stack import backend
from crimes.settings import tracking_settings

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
YEAR = 2024
# Enough real rows for most FBI codes and for the rare-class policy to matter; the whole file
# is the benchmark's job (bench/etl_full.py).
ROWS = 40_000
# Optuna trials of the training DAG run by the tests.
TRIALS = 3


def _clear_settings_caches() -> None:
    lake_settings.cache_clear()
    tracking_settings.cache_clear()


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> StackSettings:
    tag = uuid.uuid4().hex[:8]
    settings = StackSettings(
        state_dir=tmp_path_factory.mktemp("stack"),
        object_store="seaweedfs",
        postgres_url=POSTGRES_URL,
        mlflow_database=f"crimes_mlflow_{tag}",
        mlflow_port=stack.free_port(),
        seaweedfs_port=stack.free_port(),
        seaweedfs_internal_base_port=stack.free_port_block(9),
    )
    return settings


@pytest.fixture(scope="session")
def stack_env(stack_settings: StackSettings) -> Iterator[dict[str, str]]:
    """The stack is up; its client settings are in os.environ for the whole session."""
    stack.up(stack_settings)
    # The ETL reads the session's portal double (plain http on 127.0.0.1, refused by default).
    env = stack.env_exports(stack_settings) | portal_double.admitting()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        _clear_settings_caches()
        try:
            yield env
        finally:
            stack.down(stack_settings)
            backend.drop_database(stack_settings)
    _clear_settings_caches()


@pytest.fixture(scope="session")
def airflow_env(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """An AIRFLOW_HOME with its metadata DB on PostgreSQL, migrated."""
    from crimes.local import airflow_runner

    database = f"crimes_airflow_{uuid.uuid4().hex[:8]}"
    db_settings = StackSettings(postgres_url=POSTGRES_URL, mlflow_database=database)
    backend.ensure_database(db_settings)
    home: Path = tmp_path_factory.mktemp("airflow")
    env = airflow_runner.environment(
        home, airflow_runner.metadata_url(POSTGRES_URL, database, home), extra=stack_env
    )
    airflow_runner.migrate(env)
    try:
        yield env
    finally:
        backend.drop_database(db_settings)


@pytest.fixture(scope="session")
def stack_portal(real_data: Path) -> Iterator[PortalDouble]:
    """The portal double serving the first ROWS real rows of 2024."""
    with PortalDouble(real_data, rows=ROWS) as double:
        yield double


@pytest.fixture(scope="session")
def published(airflow_env: dict[str, str], stack_portal: PortalDouble) -> dict[str, Any]:
    """Airflow has run the ETL DAG once; the year's manifest."""
    from crimes.lake import datasets
    from crimes.lake.storage import Lake
    from crimes.local import airflow_runner

    result = airflow_runner.dags_test(
        airflow_env, "etl_chicago_crimes", conf={"source": stack_portal.url, "year": YEAR}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return datasets.current_manifest(Lake(), YEAR)


@pytest.fixture(scope="session")
def trained(airflow_env: dict[str, str], published: dict[str, Any]) -> dict[str, Any]:
    """Airflow has run the training DAG on the published data; the manifest it trained on."""
    from crimes.lake import datasets
    from crimes.lake.storage import Lake
    from crimes.local import airflow_runner

    result = airflow_runner.dags_test(
        airflow_env, "train_chicago_crimes", conf={"trials": TRIALS, "cv_folds": 2}
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # The manifest the training read (other tests may have re-published the same data since).
    return datasets.current_manifest(Lake(), YEAR)
