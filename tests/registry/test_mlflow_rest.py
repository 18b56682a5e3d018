"""The model services' MLflow client: what its calls cost beyond the call."""

from __future__ import annotations

import ssl

import httpx
import pytest

from crimes.registry import mlflow_rest


def test_clients_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service asks MLflow for its alias every few seconds: a new TLS context per ask would
    load the CA bundle each time (about 20 ms of CPU here)."""
    made: list[ssl.SSLContext] = []
    real = httpx.create_ssl_context

    def counted() -> ssl.SSLContext:
        made.append(real())
        return made[-1]

    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    mlflow_rest._tls_context.cache_clear()
    rest = mlflow_rest.MlflowRest("https://mlflow.example:5000", 1.0, 0)
    for _ in range(3):
        rest._client().close()
    assert len(made) == 1
    mlflow_rest._tls_context.cache_clear()
