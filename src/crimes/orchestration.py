"""What the Airflow DAGs share: the Asset the ETL publishes and the training is scheduled on.

Kept free of heavy imports: DAG files import it at parse time.
"""

from __future__ import annotations

from typing import Any, Final

from crimes.settings import lake_settings

FINAL_DATA_ASSET: Final = "chicago_crimes_final"
ETL_DAG_ID: Final = "etl_chicago_crimes"
TAGS: Final = ("chicago-crimes",)


def final_data_asset() -> Any:
    """The ETL's published data set (every year; the event's extra says which one)."""
    from airflow.sdk import Asset

    return Asset(
        name=FINAL_DATA_ASSET,
        uri=f"{lake_settings().root.rstrip('/')}/chicago/crimes/final",
        group="chicago_crimes",
    )
