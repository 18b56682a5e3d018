"""The model server's errors, each with its outcome (`protocol.outcomes`, which says what it is
on the wire).

The data plane raises these; the transport turns them into a status with the error's message
(which names the problem) in one place. Anything else escaping a handler is a bug: its outcome
is ERROR (gRPC's INTERNAL), it is logged with its traceback, and never reaches the client as
UNKNOWN.
"""

from __future__ import annotations

from typing import ClassVar

from crimes.protocol import inference
from crimes.protocol.outcomes import Outcome


class ServingError(Exception):
    """A request the server refuses, with a message for the client."""

    outcome: ClassVar[Outcome] = Outcome.ERROR


class InvalidInput(ServingError, inference.InvalidInput):
    """The request itself is malformed: tensors, shapes, datatypes, values, parameters (the
    protocol's own decoding raises its `InvalidInput`, which has the same outcome)."""

    outcome = Outcome.INVALID


class PreconditionFailed(ServingError):
    """A well-formed request that does not fit the loaded model (another transformation)."""

    outcome = Outcome.STALE


class ModelNotFound(ServingError):
    """The request names a model or version this server does not serve."""

    outcome = Outcome.NOT_FOUND


class ModelUnavailable(ServingError):
    """No model is loaded yet: retry later (readiness says when)."""

    outcome = Outcome.UNAVAILABLE


class ModelLoadError(RuntimeError):
    """A model version could not be loaded or failed its checks (never sent to clients)."""


def outcome_of(error: BaseException) -> Outcome:
    """The outcome of a request whose handling raised `error`."""
    if isinstance(error, ServingError):
        return error.outcome
    if isinstance(error, inference.InvalidInput):
        return Outcome.INVALID
    return Outcome.ERROR
