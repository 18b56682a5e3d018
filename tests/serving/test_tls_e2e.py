"""TLS on the model services' gRPC port and the gateway's channels, with certificates this test
makes: real `crimes serve` processes (serving their lake bundles: no MLflow is needed here) and
a real gateway. With TLS on, a plaintext client, a client trusting another CA, and (with mutual
TLS) a client without a certificate get nothing; the gateway given the CA answers through TLS;
the container's probe speaks TLS too."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crimes import registry
from crimes.gateway.schemas import EXAMPLE
from crimes.lake.settings import LakeSettings
from crimes.lake.storage import Lake
from crimes.local import launch
from crimes.local.launch import CRIMES, LocalProcess
from crimes.local.stack import free_port
from crimes.ops.probe import grpc_serving
from crimes.ops.tls import ClientTls
from crimes.registry import bundles
from tests.serving.models import bundle, train
from tests.support.certs import Authority, Issued

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("pki")
    authority = Authority(folder / "ca")
    return {
        "ca": authority.issued.cert,
        # Serving, and as a client too: its probe presents it when clients must (mutual TLS).
        "service": authority.issue("model-service", client=True),
        "gateway": authority.issue("gateway", server=False, client=True),
        "stranger": Authority(folder / "other", "another CA").issued.cert,
    }


@pytest.fixture(scope="module")
def offline_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A data lake holding both models' bundles, and an MLflow address nobody answers."""
    root = tmp_path_factory.mktemp("lake")
    lake = Lake(LakeSettings(root=f"file://{root}/data"))
    for kind in ("dtc", "lda"):
        bundles.write_bundle(lake, bundle(train(kind, on_array=True), registry.MODELS[kind], "1"))
    nowhere = f"http://127.0.0.1:{free_port()}"
    return {
        "CRIMES_LAKE_ROOT": f"file://{root}/data",
        "CRIMES_MODEL_TRACKING_URI": nowhere,
        "CRIMES_MODEL_MLFLOW_TIMEOUT_SECONDS": "1",
        "CRIMES_MODEL_MLFLOW_MAX_RETRIES": "0",
        "CRIMES_GATEWAY_TRACKING_URI": nowhere,
        "CRIMES_GATEWAY_MLFLOW_TIMEOUT_SECONDS": "1",
        "CRIMES_GATEWAY_MLFLOW_MAX_RETRIES": "0",
    }


def _tls_env(service: Issued, client_ca: Path | None = None) -> dict[str, str]:
    env = {
        "CRIMES_MODEL_TLS_CERT_FILE": str(service.cert),
        "CRIMES_MODEL_TLS_KEY_FILE": str(service.key),
    }
    if client_ca is not None:
        env["CRIMES_MODEL_TLS_CLIENT_CA_FILE"] = str(client_ca)
    return env


@pytest.fixture(scope="module")
def services(
    pki: dict[str, Any], offline_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LocalProcess]]:
    """lda with TLS; dtc with mutual TLS (clients must present a certificate of the CA)."""
    folder = tmp_path_factory.mktemp("tls-services")
    gateway_cert: Issued = pki["gateway"]
    started = {
        "lda": launch.serve(
            LocalProcess, "lda", {**offline_env, **_tls_env(pki["service"])}, folder
        ),
        "dtc": launch.serve(
            LocalProcess, "dtc", {**offline_env, **_tls_env(pki["service"], pki["ca"])}, folder
        ),
    }
    started["lda"].tls = ClientTls(pki["ca"])
    started["dtc"].tls = ClientTls(pki["ca"], gateway_cert.cert, gateway_cert.key)
    try:
        for service in started.values():
            service.wait_healthy(timeout=120)
        yield started
    finally:
        for service in started.values():
            service.stop()


def test_a_service_with_tls_answers_only_clients_that_verify_it(
    services: dict[str, LocalProcess], pki: dict[str, Any]
) -> None:
    lda, dtc = services["lda"], services["dtc"]
    name = registry.MODELS["lda"]
    assert grpc_serving(lda.address, name, tls=ClientTls(pki["ca"])) == (True, "SERVING")
    plaintext = grpc_serving(lda.address, name)
    assert plaintext[0] is False, plaintext
    assert plaintext[1].startswith("UNAVAILABLE"), plaintext
    stranger = grpc_serving(lda.address, name, tls=ClientTls(pki["stranger"]))
    assert stranger[0] is False, stranger
    assert stranger[1].startswith("UNAVAILABLE"), stranger
    # Mutual TLS: the CA alone is not enough, the client's own certificate is asked for.
    gateway_cert: Issued = pki["gateway"]
    dtc_name = registry.MODELS["dtc"]
    without = grpc_serving(dtc.address, dtc_name, tls=ClientTls(pki["ca"]))
    assert without[0] is False, without
    with_cert = ClientTls(pki["ca"], gateway_cert.cert, gateway_cert.key)
    assert grpc_serving(dtc.address, dtc_name, tls=with_cert) == (True, "SERVING")
    assert '"tls": "mutual"' in dtc.log.read_text()


def _probe(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRIMES, "probe", "model-service"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_containers_probe_speaks_tls_with_the_services_own_settings(
    services: dict[str, LocalProcess], pki: dict[str, Any]
) -> None:
    dtc = services["dtc"]
    settings = {
        "CRIMES_MODEL_NAME": registry.MODELS["dtc"],
        "CRIMES_MODEL_PORT": str(dtc.port),
        **_tls_env(pki["service"], pki["ca"]),
        "CRIMES_MODEL_TLS_PROBE_CA_FILE": str(pki["ca"]),
    }
    probed = _probe(settings)
    assert (probed.returncode, probed.stdout.strip()) == (0, "SERVING"), probed.stderr
    plaintext = _probe({k: v for k, v in settings.items() if "TLS" not in k})
    assert plaintext.returncode == 1, plaintext.stdout


def test_the_gateway_given_the_ca_answers_through_tls(
    services: dict[str, LocalProcess],
    pki: dict[str, Any],
    offline_env: dict[str, str],
    tmp_path: Path,
) -> None:
    gateway_cert: Issued = pki["gateway"]
    targets = {
        "CRIMES_GATEWAY_DTC_ADDRESS": f"dns:///{services['dtc'].address}",
        "CRIMES_GATEWAY_LDA_ADDRESS": f"dns:///{services['lda'].address}",
    }
    with_tls = {
        **offline_env,
        **targets,
        "CRIMES_GATEWAY_MODEL_TLS_CA_FILE": str(pki["ca"]),
        "CRIMES_GATEWAY_MODEL_TLS_CERT_FILE": str(gateway_cert.cert),
        "CRIMES_GATEWAY_MODEL_TLS_KEY_FILE": str(gateway_cert.key),
    }
    with launch.serving("gateway", with_tls, tmp_path / "tls") as gateway:
        answer = _first_answer(gateway.url)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"dtc_fbi_code_output", "lda_fbi_code_output"}
    assert all(answer.json().values())

    # The same gateway without the CA speaks plaintext, which the services do not answer.
    with launch.serving("gateway", {**offline_env, **targets}, tmp_path / "plain") as gateway:
        refused = httpx.post(
            f"{gateway.url}/predict", json={"features": EXAMPLE}, timeout=10, trust_env=False
        )
    assert refused.status_code == 503, refused.text


def _first_answer(url: str) -> httpx.Response:
    """The first 200 within a while (the transformations are fetched on the first calls)."""
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.post(
            f"{url}/predict", json={"features": EXAMPLE}, timeout=10, trust_env=False
        )
        if answer.status_code == 200 or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def test_tls_settings_that_cannot_work_stop_the_service_with_one_line(
    pki: dict[str, Any], tmp_path: Path
) -> None:
    cases = {
        "a certificate without its key": {"CRIMES_MODEL_TLS_CERT_FILE": str(pki["ca"])},
        "a file that is not PEM": {
            "CRIMES_MODEL_TLS_CERT_FILE": "/etc/hostname",
            "CRIMES_MODEL_TLS_KEY_FILE": "/etc/hostname",
        },
        "a missing file": {
            "CRIMES_MODEL_TLS_CERT_FILE": str(tmp_path / "none.crt"),
            "CRIMES_MODEL_TLS_KEY_FILE": str(tmp_path / "none.key"),
        },
    }
    for case, env in cases.items():
        ran = subprocess.run(
            [CRIMES, "serve", "lda", "--port", "0"],
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        lines = [line for line in ran.stderr.splitlines() if not line.startswith("{")]
        assert ran.returncode == 2, (case, ran.stderr)
        assert len(lines) == 1, (case, ran.stderr)
        assert "CRIMES_MODEL_TLS_" in lines[0], (case, ran.stderr)
        assert "Traceback" not in ran.stderr, case
