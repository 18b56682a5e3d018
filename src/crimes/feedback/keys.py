"""A crime record's key: the portal's `id` and `case_number`, both stable once published.

Clients may send them with a prediction (never as features) so that the answer can later be
joined with the record's published FBI code; the ETL's raw rows carry the same two columns.
One normalisation serves both sides, whatever the export format gave: the CSV export's
`13311263` and the JSON API's `"13311263"` are one id, `jh159934 ` and `JH159934` one case.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

MAX_ID_DIGITS: Final = 12
MAX_CASE_NUMBER: Final = 16
_CASE_NUMBER: Final = re.compile(r"[A-Z0-9][A-Z0-9-]*")


def normalise_record_id(value: Any) -> str | None:
    """A record id as its decimal digits (None: absent); ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a record id is a whole number, not a boolean")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
        if text == "":
            return None
    else:
        raise ValueError("a record id is a whole number or its digits as text")
    if not text.isascii() or not text.isdigit() or len(text) > MAX_ID_DIGITS:
        raise ValueError(f"a record id is 1 to {MAX_ID_DIGITS} digits")
    return str(int(text))  # no leading zeros: the portal's ids have none


def normalise_case_number(value: Any) -> str | None:
    """A case number in upper case (None: absent); ValueError for anything else."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("a case number is text")
    text = value.strip().upper()
    if text == "":
        return None
    if len(text) > MAX_CASE_NUMBER or not _CASE_NUMBER.fullmatch(text):
        raise ValueError(
            f"a case number is 1 to {MAX_CASE_NUMBER} letters, digits and dashes (e.g. JH159934)"
        )
    return text


class RecordKey(BaseModel):
    """The key of one record, as a request may carry it (at least one of the two)."""

    model_config = ConfigDict(
        extra="forbid",
        validate_by_name=True,
        serialize_by_alias=True,
        json_schema_extra={"examples": [{"id": 13311263, "case_number": "JH159934"}]},
    )

    record_id: Annotated[
        str | None,
        BeforeValidator(normalise_record_id),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": 10**MAX_ID_DIGITS - 1},
                    {"type": "string", "pattern": f"^[0-9]{{1,{MAX_ID_DIGITS}}}$"},
                    {"type": "null"},
                ]
            }
        ),
        Field(alias="id", description="The portal's record id (digits; a number or text)."),
    ] = None
    case_number: Annotated[
        str | None,
        BeforeValidator(normalise_case_number),
        WithJsonSchema(
            {
                "anyOf": [
                    {
                        "type": "string",
                        "pattern": f"^[A-Za-z0-9][A-Za-z0-9-]{{0,{MAX_CASE_NUMBER - 1}}}$",
                    },
                    {"type": "null"},
                ]
            }
        ),
        Field(description="The portal's case number (letters, digits and dashes)."),
    ] = None

    @model_validator(mode="after")
    def _one_at_least(self) -> RecordKey:
        if self.record_id is None and self.case_number is None:
            raise ValueError("a record key needs its id, its case_number or both")
        return self


class RecordKeys:
    """The keys of a request's records, column by column (None where a record has none)."""

    def __init__(self, ids: list[str | None], case_numbers: list[str | None]) -> None:
        self.ids = ids
        self.case_numbers = case_numbers

    @classmethod
    def of(cls, keys: list[RecordKey]) -> RecordKeys:
        return cls([k.record_id for k in keys], [k.case_number for k in keys])

    def __len__(self) -> int:
        return len(self.ids)
