"""A model service as the gateway's core sees it, whatever carries the calls: what it last said
about itself, how a call to it fails, and the calls the core makes. `backends.ModelService` is
the gRPC implementation; the core never imports it (nor gRPC)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from crimes.protocol import inference
from crimes.protocol.outcomes import Outcome


class ModelCallError(Exception):
    """A call that got no usable answer, and its outcome (never OK)."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message

    @property
    def status(self) -> Outcome:
        """What the gateway's answers say for this model: a timeout, nothing available to
        answer, or an error of the other side (whatever it was)."""
        if self.outcome in (Outcome.TIMEOUT, Outcome.UNAVAILABLE):
            return self.outcome
        return Outcome.ERROR


@dataclass
class ServiceState:
    """What a model service last said about itself."""

    ready: bool = False
    model_version: str | None = None
    transformation_version: str | None = None
    run_id: str | None = None
    source: str | None = None
    location: str | None = None
    model_class: str | None = None
    error: str | None = None
    # The most records it takes in one call, as it advertises (None: not known).
    max_batch_rows: int | None = None
    # What its model computes on (its metadata's input datatype): FP32 features give a model
    # that computes on float32 exactly the same answers with half the bytes on the wire.
    input_datatype: str = "FP64"
    # Whether it answers the labels as indices (its metadata lists that output): the cheaper
    # answer to read; a service that does not gets asked for the labels themselves.
    label_index: bool = False
    # It did not answer within the deadline: this says nothing new about it (a busy machine).
    timed_out: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "model_version": self.model_version,
            "transformation_version": self.transformation_version,
            "mlflow_run_id": self.run_id,
            "source": self.source,
            "location": self.location,
            "error": self.error,
        }


class ModelClient(Protocol):
    """The calls the core makes to one model service (all its replicas)."""

    model_name: str
    address: str
    deadline_seconds: float
    state: ServiceState

    async def close(self) -> None:
        """Release its connections (the gateway is stopping)."""

    async def refresh(self) -> ServiceState:
        """Ask the service for its readiness and metadata (in-flight refreshes are shared)."""

    def refresh_soon(self) -> None:
        """A call found nothing to answer: refresh in the background, with a backoff."""

    async def infer(
        self,
        features: np.ndarray,
        transformation_version: str,
        probabilities: bool,
        request_ids: Sequence[str] = (),
        confidence: bool = False,
    ) -> inference.InferOutput:
        """The model's answer for the rows of `features` (with each row's top probability when
        `confidence`); ModelCallError otherwise."""
