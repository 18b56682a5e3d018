"""The model server's errors, and the one table that maps them to gRPC status codes.

Request handlers raise these; the server turns them into a status with the error's message
(which names the problem) in one place. Anything else escaping a handler is a bug: it becomes
INTERNAL, is logged with its traceback, and never reaches the client as UNKNOWN.
"""

from __future__ import annotations

from typing import Final

import grpc

from crimes.protocol import inference


class ServingError(Exception):
    """A request the server refuses, with a message for the client."""


class InvalidInput(ServingError, inference.InvalidInput):
    """The request itself is malformed: tensors, shapes, datatypes, values, parameters (the
    protocol's own decoding raises its `InvalidInput`, mapped the same way)."""


class PreconditionFailed(ServingError):
    """A well-formed request that does not fit the loaded model (another transformation)."""


class ModelNotFound(ServingError):
    """The request names a model or version this server does not serve."""


class ModelUnavailable(ServingError):
    """No model is loaded yet: retry later (readiness says when)."""


class ModelLoadError(RuntimeError):
    """A model version could not be loaded or failed its checks (never sent to clients)."""


STATUS_CODES: Final[dict[type[Exception], grpc.StatusCode]] = {
    inference.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    PreconditionFailed: grpc.StatusCode.FAILED_PRECONDITION,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ModelUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code(error: BaseException) -> grpc.StatusCode:
    """The status a client sees for an error raised while handling its request."""
    for kind, code in STATUS_CODES.items():
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL
