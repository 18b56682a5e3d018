"""The one table of outcomes: each names a real gRPC status and an HTTP status, and a status a
model service answers reads back as the outcome it came from."""

from __future__ import annotations

import grpc

from crimes.protocol.outcomes import (
    Outcome,
    from_grpc_status_name,
    grpc_status_name,
    http_status,
)


def test_every_outcome_has_a_grpc_and_an_http_status_and_reads_back() -> None:
    for outcome in Outcome:
        code = grpc.StatusCode[grpc_status_name(outcome)]
        assert from_grpc_status_name(code.name) is outcome
        assert 200 <= http_status(outcome) < 600
    assert http_status(Outcome.OK) == 200
    assert http_status(Outcome.INVALID) == 422
    assert http_status(Outcome.UNAVAILABLE) == 503


def test_a_status_this_project_never_sends_is_the_other_sides_error() -> None:
    for code in (
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DATA_LOSS,
    ):
        assert from_grpc_status_name(code.name) is Outcome.ERROR


def test_a_call_the_model_service_cancelled_is_nothing_answered() -> None:
    assert from_grpc_status_name(grpc.StatusCode.CANCELLED.name) is Outcome.UNAVAILABLE
