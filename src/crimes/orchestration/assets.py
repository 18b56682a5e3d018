"""What the Airflow DAGs share: the Asset the ETL publishes and the training is scheduled on.

Kept free of heavy imports: DAG files import it at parse time.
"""

from __future__ import annotations

from typing import Any, Final

from crimes.lake.settings import lake_settings

FINAL_DATA_ASSET: Final = "chicago_crimes_final"
ETL_DAG_ID: Final = "etl_chicago_crimes"
TRAINING_DAG_ID: Final = "train_chicago_crimes"
MONITOR_DAG_ID: Final = "monitor_drift"
EVALUATION_DAG_ID: Final = "evaluate_served_predictions"
TAGS: Final = ("chicago-crimes",)


def final_data_asset() -> Any:
    """The ETL's published data set (every year; the event's extra says which one)."""
    from airflow.sdk import Asset

    return Asset(
        name=FINAL_DATA_ASSET,
        uri=f"{lake_settings().root.rstrip('/')}/chicago/crimes/final",
        group="chicago_crimes",
    )


def active_retrain_runs(context: Any) -> int:
    """ETL and training runs queued or running: a monitor starts no retrain while one is."""
    return sum(
        context["ti"].get_dr_count(dag_id=dag_id, states=["queued", "running"])
        for dag_id in (ETL_DAG_ID, TRAINING_DAG_ID)
    )


def triggering_year(context: Any, default: int) -> int:
    """The year a DAG run is about: its `year` param, else the ETL event that started it."""
    year = context["params"].get("year") or _from_events(context, "year")
    return int(year) if year else default


def triggering_dataset(context: Any) -> str | None:
    """The dataset id the ETL event that started this run names (the newest such event)."""
    dataset = _from_events(context, "dataset")
    return str(dataset) if dataset else None


def _from_events(context: Any, key: str) -> Any:
    """`key` of the newest triggering Asset event that carries it, else None."""
    events = context.get("triggering_asset_events") or {}
    for asset_events in events.values():
        for event in reversed(list(asset_events)):
            if event.extra and event.extra.get(key):
                return event.extra[key]
    return None
