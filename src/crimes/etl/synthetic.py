"""An explicitly labelled SYNTHETIC sample of crime records in the portal's CSV export format.

For tests and for a demo that must run when the portal is unreachable and no file is named.
The codes are a small hand-made table, not the city's; nothing here is real data.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import numpy as np
import pandas as pd

SYNTHETIC_MARK: Final = "SYNTHETIC"

# (iucr, primary_type, description, fbi_code): made up in the portal's shape.
_OFFENCES: Final = (
    ("0486", "BATTERY", "DOMESTIC BATTERY SIMPLE", "08B"),
    ("0460", "BATTERY", "SIMPLE", "08B"),
    ("0820", "THEFT", "$500 AND UNDER", "06"),
    ("0810", "THEFT", "OVER $500", "06"),
    ("1310", "CRIMINAL DAMAGE", "TO PROPERTY", "14"),
    ("0910", "MOTOR VEHICLE THEFT", "AUTOMOBILE", "07"),
    ("0930", "MOTOR VEHICLE THEFT", "THEFT / RECOVERY - AUTOMOBILE", "07"),
    ("051A", "ASSAULT", "AGGRAVATED - HANDGUN", "04A"),
    ("0560", "ASSAULT", "SIMPLE", "08A"),
    ("0610", "BURGLARY", "FORCIBLE ENTRY", "05"),
    ("031A", "ROBBERY", "ARMED - HANDGUN", "03"),
    ("1811", "NARCOTICS", "POSSESS - CANNABIS 30GMS OR LESS", "18"),
    ("1365", "CRIMINAL TRESPASS", "TO RESIDENCE", "26"),
    ("0110", "HOMICIDE", "FIRST DEGREE MURDER", "01A"),
)
_PLACES: Final = ("STREET", "APARTMENT", "RESIDENCE", "SIDEWALK", "SMALL RETAIL STORE", "ALLEY")


def sample(rows: int, year: int = 2024, seed: int = 7) -> pd.DataFrame:
    """`rows` raw records as text, like the portal's CSV export, ids 1..rows."""
    rng = np.random.default_rng(seed)
    weights = np.linspace(3.0, 0.2, len(_OFFENCES))
    offence = rng.choice(len(_OFFENCES), size=rows, p=weights / weights.sum())
    start = datetime(year, 1, 1)
    minutes = rng.integers(0, 365 * 24 * 60, size=rows)
    district = rng.integers(1, 26, size=rows)
    # Real reports are not a pure function of the IUCR code: some rows carry another offence's
    # FBI code. Without that noise the encoded IUCR has no spread within a class, and LDA's
    # within-class scatter drops exactly the directions that separate the classes.
    noisy = rng.random(rows) < 0.03
    other = rng.choice(len(_OFFENCES), size=rows)
    latitude = rng.uniform(41.65, 42.02, size=rows).round(9)
    longitude = rng.uniform(-87.93, -87.53, size=rows).round(9)
    records = []
    for i in range(rows):
        iucr, primary, description, fbi = _OFFENCES[offence[i]]
        when = start + timedelta(minutes=int(minutes[i]))
        records.append(
            {
                "id": str(i + 1),
                "case_number": f"SY{i + 1:06d}",
                "date": when.strftime("%m/%d/%Y %I:%M:%S %p"),
                "block": f"0{i % 99:02d}XX {SYNTHETIC_MARK} ST",
                "iucr": iucr,
                "primary_type": primary,
                "description": description,
                "location_description": _PLACES[int(rng.integers(len(_PLACES)))],
                "arrest": "true" if rng.random() < 0.15 else "false",
                "domestic": "true" if iucr == "0486" or rng.random() < 0.1 else "false",
                "beat": f"{int(district[i]) * 100 + int(rng.integers(1, 25)):04d}",
                "district": f"{int(district[i]):03d}",
                "ward": str(int(rng.integers(1, 51))),
                "community_area": str(int(rng.integers(1, 78))),
                "fbi_code": _OFFENCES[other[i]][3] if noisy[i] else fbi,
                "x_coordinate": "",
                "y_coordinate": "",
                "year": str(year),
                "updated_on": (when + timedelta(days=7)).strftime("%m/%d/%Y %I:%M:%S %p"),
                "latitude": f"{latitude[i]}",
                "longitude": f"{longitude[i]}",
                "location": f"POINT ({longitude[i]} {latitude[i]})",
            }
        )
    return pd.DataFrame(records).replace("", None)
