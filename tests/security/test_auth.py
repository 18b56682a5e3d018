"""Attack surface: the API key. A deployment that forgot its key must not serve the world
without one: the gateway refuses to start keyless unless the deployment says it is local-only
(the local tooling, compose's local-only profile on loopback), and Kubernetes requires the
secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from crimes.local.stack import free_port
from tests.conftest import PROJECT_ROOT

CRIMES = str(Path(sys.executable).with_name("crimes"))


def _serve_gateway(**settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRIMES_GATEWAY_")}
    return subprocess.run(
        [CRIMES, "serve", "gateway", "--port", str(free_port())],
        env={**env, **settings},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_gateway_without_a_key_refuses_to_start_in_one_line() -> None:
    """Attack: a deployment whose key went missing (an unset variable, an empty secret)."""
    for settings in ({}, {"CRIMES_GATEWAY_API_KEY": ""}):
        done = _serve_gateway(**settings)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("crimes serve gateway: CRIMES_GATEWAY_API_KEY is not set")
        assert "Traceback" not in done.stderr


def test_kubernetes_requires_the_gateway_secret() -> None:
    """Attack: deploy the manifests without creating the key's secret."""
    manifest = PROJECT_ROOT / "deploy" / "kubernetes" / "base" / "gateway.yaml"
    refs = [
        env["valueFrom"]["secretKeyRef"]
        for document in yaml.safe_load_all(manifest.read_text())
        if document and document.get("kind") == "Deployment"
        for container in document["spec"]["template"]["spec"]["containers"]
        for env in container.get("env", [])
        if env["name"] == "CRIMES_GATEWAY_API_KEY"
    ]
    assert refs == [{"name": "crimes-gateway", "key": "api-key", "optional": False}]
