"""Attack surface: the registry. Its digest tag (`onnx_sha256`) is written by whoever may write
the registry, so a registry writer could register a form of their own with a matching digest.
With the training's public key, a model service loads only forms the training signed: an
unsigned version, and one carrying another version's signature, are refused while the signed
champion serves on; a version the training signs is served."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crimes.registry import Tag, signing
from tests.serving.models import Trained, train
from tests.serving.processes import ServiceProcess, move_alias, register, start_service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return signing.new_pair()


@pytest.fixture(scope="module")
def trees() -> dict[str, Trained]:
    return {
        "deep": train("dtc", on_array=True),
        "shallow": train("dtc", max_depth=3, on_array=True),
    }


@pytest.fixture(scope="module")
def service(
    stack_env: dict[str, str],
    keys: tuple[str, str],
    trees: dict[str, Trained],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str, ServiceProcess]]:
    """A model service holding the training's public key, serving a champion it signed."""
    name = f"dtc_signed_{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRIMES_TRAIN_SIGNING_KEY", keys[0])
        version, _ = register(trees["deep"], name)
    folder: Path = tmp_path_factory.mktemp("signed")
    started = start_service("dtc", name, stack_env, folder, verify_key=keys[1])
    try:
        started.wait_until("SERVING")
        yield name, version, started
    finally:
        started.stop()


def test_an_unsigned_form_is_refused_and_the_signed_one_serves_on(
    service: tuple[str, str, ServiceProcess], trees: dict[str, Trained]
) -> None:
    """Attack: register a form (a real export, its digest tagged right) without the key."""
    name, serving, process = service
    assert process.metadata()["version"] == serving
    unsigned, _ = register(trees["shallow"], name, alias=None)
    move_alias(name, unsigned)
    try:
        failure = process.wait_for_log("model.load_failed", version=unsigned)
        assert "has no 'onnx_signature' tag" in failure["reason"], failure
        assert process.metadata()["version"] == serving
        assert process.health() == "SERVING"
    finally:
        move_alias(name, serving)


def test_a_signature_copied_from_another_version_does_not_verify(
    service: tuple[str, str, ServiceProcess], trees: dict[str, Trained]
) -> None:
    """Attack: copy the champion's signature onto a version of one's own."""
    import mlflow

    name, serving, process = service
    client = mlflow.MlflowClient()
    signature = client.get_model_version(name, serving).tags[Tag.ONNX_SIGNATURE]
    forged, _ = register(trees["shallow"], name, alias=None)
    client.set_model_version_tag(name, forged, Tag.ONNX_SIGNATURE, signature)
    move_alias(name, forged)
    try:
        failure = process.wait_for_log("model.load_failed", version=forged)
        assert "does not verify" in failure["reason"], failure
        assert process.metadata()["version"] == serving
    finally:
        move_alias(name, serving)


def test_a_version_the_training_signs_is_served(
    service: tuple[str, str, ServiceProcess], keys: tuple[str, str], trees: dict[str, Trained]
) -> None:
    name, serving, process = service
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRIMES_TRAIN_SIGNING_KEY", keys[0])
        signed, _ = register(trees["shallow"], name, alias=None)
    move_alias(name, signed)
    try:
        deadline = time.monotonic() + 60
        while process.metadata()["version"] != signed:
            assert time.monotonic() < deadline, process.tail()
            time.sleep(0.2)
    finally:
        move_alias(name, serving)
