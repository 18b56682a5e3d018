"""Made-up crime records in the portal's two real export formats (values invented; formats real)."""

from __future__ import annotations

from typing import Any

from crimes.gateway.schemas import EXAMPLE

CSV_RECORD: dict[str, Any] = {
    "id": "900001",
    "case_number": "ZZ100001",
    "date": "12/31/2024 11:58:00 PM",
    "block": "001XX W FAKE ST",
    "iucr": "0460",
    "primary_type": "BATTERY",
    "description": "SIMPLE",
    "location_description": "STREET",
    "arrest": "false",
    "domestic": "true",
    "beat": "0332",
    "district": "003",
    "ward": "5",
    "community_area": "43",
    "fbi_code": "08B",
    "x_coordinate": "1186817",
    "y_coordinate": "1860189",
    "year": "2024",
    "updated_on": "11/02/2025 03:41:09 PM",
    "latitude": "41.771470188",
    "longitude": "-87.59074212",
    "location": "POINT (-87.59074212 41.771470188)",
}

API_RECORD: dict[str, Any] = {
    **CSV_RECORD,
    "date": "2024-12-31T23:58:00.000",
    "updated_on": "2025-11-02T15:41:09.000",
    "arrest": False,
    "domestic": True,
    "location": {
        "latitude": "41.771470188",
        "longitude": "-87.59074212",
        "human_address": '{"address": "", "city": "", "state": "", "zip": ""}',
    },
}

# The reference's example record, as the gateway documents it.
REFERENCE_EXAMPLE: dict[str, Any] = dict(EXAMPLE)


def record(base: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """A copy of a record with some fields changed; a value of None removes the field."""
    out = dict(base or CSV_RECORD)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out
