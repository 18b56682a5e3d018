"""The model lifecycle without gRPC: the fallback chain at start, and what a poll does."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from crimes.lake import layout
from crimes.lake.settings import lake_settings
from crimes.lake.storage import Lake
from crimes.registry import bundles
from crimes.serving.metrics import Metrics
from crimes.serving.model import Source
from crimes.serving.runtime import (
    FAILED,
    FALLBACK,
    LOADED,
    SKIPPED,
    UNCHANGED,
    UNLOADED,
    UNREACHABLE,
    ModelRuntime,
)
from crimes.serving.settings import ModelServerSettings
from crimes.serving.sources import fallbacks
from tests.serving.harness import NAME, FakeRegistry, settings
from tests.serving.models import Trained, bundle


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    monkeypatch.setenv("CRIMES_LAKE_ROOT", f"file://{tmp_path}/lake")
    lake_settings.cache_clear()
    yield Lake()
    lake_settings.cache_clear()


def _runtime(config: ModelServerSettings, fake: FakeRegistry) -> ModelRuntime:
    return ModelRuntime(config, fake, fallbacks(config), Metrics(config.name))


def _down() -> FakeRegistry:
    fake = FakeRegistry()
    fake.reachable = False
    return fake


def test_chain_prefers_the_local_copy_then_the_lake_then_the_bundle_path(
    tmp_path: Path, lake: Lake, dtc: Trained, dtc_other: Trained, lda: Trained
) -> None:
    config = settings(tmp_path, use_lake_bundle=True, bundle_path=tmp_path / "given")
    bundles.save_bundle_dir(tmp_path / "given", bundle(lda, NAME, "1"))
    bundles.write_bundle(lake, bundle(dtc_other, NAME, "2"))
    bundles.save_bundle_dir(config.local_copy_dir, bundle(dtc, NAME, "3"))

    def served() -> tuple[str, Source]:
        runtime = _runtime(config, _down())
        assert asyncio.run(runtime.start()) == FALLBACK
        assert runtime.current is not None
        return runtime.current.version, runtime.current.source

    assert served() == ("3", Source.LOCAL_COPY)
    # A corrupted local copy is passed over, not served.
    (config.local_copy_dir / "model.onnx").write_bytes(b"not an ONNX model")
    assert served() == ("2", Source.LAKE)
    lake.fs.rm(lake._path(layout.bundle_pointer(NAME)))
    assert served() == ("1", Source.BUNDLE_PATH)


def test_a_challenger_deployment_serves_nothing_while_no_version_holds_its_alias(
    tmp_path: Path, lake: Lake, dtc: Trained, lda: Trained
) -> None:
    """The lake's bundle and a local copy are other versions (the champion's, an earlier
    challenger's): a challenger deployment never serves them in place of its alias."""
    config = settings(tmp_path, use_lake_bundle=True, alias="challenger")
    bundles.write_bundle(lake, bundle(dtc, NAME, "1"))  # the champion's bundle
    bundles.save_bundle_dir(config.local_copy_dir, bundle(lda, NAME, "2"))
    assert Source.LAKE not in {f.source for f in fallbacks(config)}
    runtime = _runtime(config, FakeRegistry())  # reachable, no version holds the alias
    assert asyncio.run(runtime.start()) == FAILED
    assert not runtime.ready
    # Unreachable, its own last copy is what it served: that one it may serve.
    runtime = _runtime(config, _down())
    assert asyncio.run(runtime.start()) == FALLBACK
    assert runtime.current is not None
    assert (runtime.current.version, runtime.current.source) == ("2", Source.LOCAL_COPY)


def test_a_challenger_deployment_unloads_when_its_alias_is_removed(
    tmp_path: Path, dtc: Trained, dtc_other: Trained
) -> None:
    """After a promotion (or a withdrawal) no version holds `challenger`: the deployment stops
    serving the old one instead of shadowing a version nobody names; the alias back, it loads."""
    fake = FakeRegistry()
    fake.publish("4", bundle(dtc, NAME, "4"))
    runtime = _runtime(settings(tmp_path, alias="challenger"), fake)

    async def scenario() -> None:
        assert await runtime.start() == LOADED
        fake.alias_version = None  # the registry answers: no such alias
        assert await runtime.poll_once() == UNLOADED
        assert not runtime.ready
        assert await runtime.poll_once() == UNREACHABLE  # (nothing more to unload)
        fake.publish("5", bundle(dtc_other, NAME, "5"))
        assert await runtime.poll_once() == LOADED
        assert runtime.current is not None
        assert runtime.current.version == "5"
        # A champion deployment keeps serving through such an answer (never without a model).
        champion = _runtime(settings(tmp_path / "c"), fake)
        assert await champion.start() == LOADED
        fake.alias_version = None
        assert await champion.poll_once() == UNREACHABLE
        assert champion.ready

    asyncio.run(scenario())


def test_with_nothing_to_serve_the_runtime_is_not_ready(tmp_path: Path, lake: Lake) -> None:
    runtime = _runtime(
        settings(tmp_path, use_lake_bundle=True, bundle_path=tmp_path / "x"), _down()
    )
    assert asyncio.run(runtime.start()) == FAILED
    assert not runtime.ready


def test_the_registry_wins_over_every_fallback_and_leaves_a_local_copy(
    tmp_path: Path, dtc: Trained, lda: Trained
) -> None:
    config = settings(tmp_path, bundle_path=tmp_path / "given")
    bundles.save_bundle_dir(tmp_path / "given", bundle(lda, NAME, "1"))
    fake = FakeRegistry()
    fake.publish("7", bundle(dtc, NAME, "7"))
    runtime = _runtime(config, fake)
    assert asyncio.run(runtime.start()) == LOADED
    assert runtime.current is not None
    assert (runtime.current.version, runtime.current.source) == ("7", Source.MLFLOW)
    copy = bundles.load_bundle_dir(config.local_copy_dir)
    assert (copy.version, copy.transformation_version) == ("7", dtc.transformation_version)


def test_a_version_that_fails_at_start_falls_back(
    tmp_path: Path, dtc: Trained, lda: Trained
) -> None:
    config = settings(tmp_path, bundle_path=tmp_path / "given")
    bundles.save_bundle_dir(tmp_path / "given", bundle(lda, NAME, "1"))
    fake = FakeRegistry()
    fake.publish("2", RuntimeError("signature mismatch"))
    runtime = _runtime(config, fake)
    assert asyncio.run(runtime.start()) == FALLBACK
    assert runtime.current is not None
    assert (runtime.current.version, runtime.current.source) == ("1", Source.BUNDLE_PATH)


def test_polls_follow_the_alias(tmp_path: Path, dtc: Trained, dtc_other: Trained) -> None:
    fake = FakeRegistry()
    fake.publish("1", bundle(dtc, NAME, "1"))
    runtime = _runtime(settings(tmp_path, retry_failed_after_seconds=0.2), fake)

    async def scenario() -> list[str]:
        outcomes = [await runtime.start(), await runtime.poll_once()]
        fake.reachable = False
        outcomes.append(await runtime.poll_once())
        fake.reachable = True
        fake.publish("2", RuntimeError("broken"))
        outcomes += [await runtime.poll_once(), await runtime.poll_once()]
        await asyncio.sleep(0.25)
        outcomes.append(await runtime.poll_once())  # retried after the window, fails again
        fake.publish("3", bundle(dtc_other, NAME, "3"))
        outcomes += [await runtime.poll_once(), await runtime.poll_once()]
        return outcomes

    assert asyncio.run(scenario()) == [
        LOADED,
        UNCHANGED,
        UNREACHABLE,
        FAILED,
        SKIPPED,
        FAILED,
        LOADED,
        UNCHANGED,
    ]
    assert runtime.current is not None
    assert runtime.current.version == "3"
    assert fake.loads == ["1", "2", "2", "3"]


def test_after_a_fallback_start_the_registry_takes_over_when_it_returns(
    tmp_path: Path, dtc: Trained, dtc_other: Trained
) -> None:
    config = settings(tmp_path)
    bundles.save_bundle_dir(config.local_copy_dir, bundle(dtc, NAME, "1"))
    fake = FakeRegistry()
    fake.reachable = False
    runtime = _runtime(config, fake)

    async def scenario() -> list[str]:
        outcomes = [await runtime.start(), await runtime.poll_once()]
        fake.reachable = True
        fake.publish("1", bundle(dtc, NAME, "1"))
        outcomes.append(await runtime.poll_once())  # the same version: nothing to load
        fake.publish("2", bundle(dtc_other, NAME, "2"))
        outcomes.append(await runtime.poll_once())
        return outcomes

    assert asyncio.run(scenario()) == [FALLBACK, UNREACHABLE, UNCHANGED, LOADED]
    assert runtime.current is not None
    assert (runtime.current.version, runtime.current.source) == ("2", Source.MLFLOW)
