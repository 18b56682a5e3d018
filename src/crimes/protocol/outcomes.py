"""What became of a call, in the project's own terms, and the one table that says what each
outcome is on the wire: a gRPC status (the model services, and what the gateway reads back) and
an HTTP status (the gateway's answers).

The cores on both sides speak outcomes only; the transports map them here and nowhere else.
gRPC statuses are named, not imported: nothing that speaks outcomes loads gRPC for it.
"""

from __future__ import annotations

import enum
from typing import Final


class Outcome(enum.StrEnum):
    """The values are what the gateway's answers say per model (`status`)."""

    OK = "ok"
    INVALID = "invalid"  # the request itself is malformed
    NOT_FOUND = "not_found"  # names a model or version that is not served
    # Fits the protocol, not the served model: features of another transformation.
    STALE = "stale"
    UNAVAILABLE = "unavailable"  # nothing answered: no model loaded, no connection
    TIMEOUT = "timeout"  # no answer within the deadline (it may still be running)
    ERROR = "error"  # a failure on the other side


# The name of each outcome's `grpc.StatusCode`.
_GRPC: Final[dict[Outcome, str]] = {
    Outcome.OK: "OK",
    Outcome.INVALID: "INVALID_ARGUMENT",
    Outcome.NOT_FOUND: "NOT_FOUND",
    Outcome.STALE: "FAILED_PRECONDITION",
    Outcome.UNAVAILABLE: "UNAVAILABLE",
    Outcome.TIMEOUT: "DEADLINE_EXCEEDED",
    Outcome.ERROR: "INTERNAL",
}
# CANCELLED never comes from this project's model services on purpose: a replica that stops
# cancels the calls it still holds, so nothing answered.
_FROM_GRPC: Final = {code: outcome for outcome, code in _GRPC.items()} | {
    "CANCELLED": Outcome.UNAVAILABLE
}

_HTTP: Final[dict[Outcome, int]] = {
    Outcome.OK: 200,
    Outcome.INVALID: 422,
    Outcome.NOT_FOUND: 404,
    Outcome.STALE: 409,
    Outcome.UNAVAILABLE: 503,
    Outcome.TIMEOUT: 504,
    Outcome.ERROR: 500,
}


def grpc_status_name(outcome: Outcome) -> str:
    """The name of the outcome's `grpc.StatusCode` (`grpc.StatusCode[name]`)."""
    return _GRPC[outcome]


def from_grpc_status_name(name: str) -> Outcome:
    """A status a model service answered, by name: any code this project does not send is the
    other side's error."""
    return _FROM_GRPC.get(name, Outcome.ERROR)


def http_status(outcome: Outcome) -> int:
    return _HTTP[outcome]
