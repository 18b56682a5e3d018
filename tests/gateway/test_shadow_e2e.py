"""Shadow scoring end to end: champion and challenger model services (the same server, the
challenger following the alias `challenger`), the gateway shadowing every answered record, the
registry's real versions. A challenger changes no answer, its agreement counts are the ones
computed offline on the same records, and a challenger killed under load costs no request."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crimes import registry
from crimes.lake import datasets
from crimes.lake.storage import Lake
from crimes.local.launch import LocalProcess
from crimes.registry import Tag
from crimes.settings import TrackingSettings
from crimes.training import evaluate
from tests.gateway.test_gateway_e2e import records
from tests.support.stack import YEAR
from tests.support.system import gateway_metrics, serving_system

pytestmark = pytest.mark.e2e

ROWS = 300


@pytest.fixture(scope="module")
def challengers(trained: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A real challenger version per model: for dtc a shallower tree (it disagrees on some
    records), for lda the champion's own version (it agrees on all). The alias is removed
    afterwards; the version stays, as a registry keeps every version."""
    import mlflow
    from sklearn.tree import DecisionTreeClassifier

    from crimes.training import models, pipeline

    final = datasets.load_final(Lake(), YEAR)
    mlflow.set_tracking_uri(TrackingSettings().tracking_uri)
    client = mlflow.MlflowClient()
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(
        final.X_train.to_numpy(dtype=np.float64), final.y_train
    )
    name = registry.MODELS["dtc"]
    with mlflow.start_run(run_name="shadow-test-challenger"):
        fitted = models.Fitted(kind="dtc", model=tree, params={"max_depth": 3})
        version, _ = pipeline.register(fitted, final, name)
    # Only the tag serving needs: no dataset lineage, so no training mistakes it for its own.
    client.set_model_version_tag(
        name, version, Tag.TRANSFORMATION_VERSION, final.transformation_version
    )
    lda = registry.MODELS["lda"]
    lda_champion = client.get_model_version_by_alias(lda, registry.CHAMPION).version
    client.set_registered_model_alias(name, registry.CHALLENGER, version)
    client.set_registered_model_alias(lda, registry.CHALLENGER, lda_champion)
    champion = {
        kind: mlflow.sklearn.load_model(registry.model_uri(registry.MODELS[kind]))
        for kind in ("dtc", "lda")
    }
    try:
        yield {
            "final": final,
            "champion": champion,
            "challenger": {"dtc": tree, "lda": champion["lda"]},
            "versions": {"dtc": version, "lda": str(lda_champion)},
        }
    finally:
        for model in (name, lda):
            with contextlib.suppress(Exception):  # a promotion may have removed it
                client.delete_registered_model_alias(model, registry.CHALLENGER)


@pytest.fixture(scope="module")
def system(
    challengers: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LocalProcess]]:
    folder = tmp_path_factory.mktemp("shadow")
    deployments = ("dtc", "lda", "dtc-challenger", "lda-challenger")
    # `crimes serve dtc-challenger`: its deployment's file says alias `challenger`.
    with serving_system(
        folder, deployments, gateway={"CRIMES_GATEWAY_SHADOW_SHARE": "1"}
    ) as started:
        yield started


def shadow_counts(gateway: LocalProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = gateway_metrics(gateway)
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("crimes_gateway_shadow"):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def settled(gateway: LocalProcess) -> dict[Any, float]:
    """The shadow counts once every record sent to a challenger is scored or dropped."""
    deadline = time.monotonic() + 30
    while True:
        counts = shadow_counts(gateway)
        done = all(
            total(counts, "crimes_gateway_shadow_records_total", model=kind)
            + total(counts, "crimes_gateway_shadow_dropped_total", model=kind)
            == total(counts, "crimes_gateway_shadow_sent_total", model=kind)
            for kind in ("dtc", "lda")
        )
        if done:
            return counts
        assert time.monotonic() < deadline, counts
        time.sleep(0.2)


def total(counts: dict[Any, float], name: str, **labels: str) -> float:
    return sum(
        value
        for (metric, found), value in counts.items()
        if metric == name and all(dict(found).get(k) == v for k, v in labels.items())
    )


def test_shadowing_changes_no_answer_and_agreement_matches_offline(
    system: dict[str, LocalProcess], challengers: dict[str, Any]
) -> None:
    final = challengers["final"]
    rows = records(final.features_test.head(ROWS))
    matrix = final.X_test.head(ROWS).to_numpy(dtype=np.float64)
    expected = {kind: challengers["champion"][kind].predict(matrix) for kind in ("dtc", "lda")}
    offline = {kind: challengers["challenger"][kind].predict(matrix) for kind in ("dtc", "lda")}
    gateway = system["gateway"]
    with httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as http:
        deadline = time.monotonic() + 30
        # Warm: the first answer waits for the transformation; the challengers get ready.
        while (
            http.post("/predict", json={"features": rows[0]}).status_code != 200
            or (http.get("/models").json()["dtc"]["challenger"] or {}).get("ready") is not True
        ):
            assert time.monotonic() < deadline, "the gateway or the challengers never got ready"
            time.sleep(0.5)
        before = settled(gateway)
        for i, record in enumerate(rows[:100]):  # one by one
            answer = http.post("/predict", json={"features": record}).json()
            assert answer == {
                "dtc_fbi_code_output": expected["dtc"][i],
                "lda_fbi_code_output": expected["lda"][i],
            }
        batch = http.post("/predict/batch", json={"features": rows[100:]}).json()
        assert [p["dtc_fbi_code_output"] for p in batch] == list(expected["dtc"][100:])
        assert [p["lda_fbi_code_output"] for p in batch] == list(expected["lda"][100:])
        after = settled(gateway)
        described = http.get("/models").json()
    counts = {key: value - before.get(key, 0.0) for key, value in after.items()}
    for kind in ("dtc", "lda"):
        assert total(counts, "crimes_gateway_shadow_sent_total", model=kind) == ROWS
        assert total(counts, "crimes_gateway_shadow_dropped_total", model=kind) == 0
    for kind in ("dtc", "lda"):
        versions = {
            "model": kind,
            "challenger_version": challengers["versions"][kind],
        }
        agreed = int(np.sum(expected[kind] == offline[kind]))
        assert total(counts, "crimes_gateway_shadow_records_total", **versions) == ROWS
        assert total(counts, "crimes_gateway_shadow_agreements_total", **versions) == agreed
        pairs: dict[tuple[str, str], int] = {}
        for ours, theirs in zip(expected[kind], offline[kind], strict=True):
            if ours != theirs:
                pairs[(ours, theirs)] = pairs.get((ours, theirs), 0) + 1
        for (ours, theirs), count in pairs.items():
            assert (
                total(
                    counts,
                    "crimes_gateway_shadow_disagreements_total",
                    **versions,
                    champion_code=ours,
                    challenger_code=theirs,
                )
                == count
            )
        challenger = described[kind]["challenger"]
        assert challenger["model_version"] == challengers["versions"][kind]
        # /models counts since the gateway started (warm-up records included).
        scored = total(after, "crimes_gateway_shadow_records_total", **versions)
        agreeing = total(after, "crimes_gateway_shadow_agreements_total", **versions)
        assert challenger["shadow_records"] == scored
        assert challenger["agreement"] == pytest.approx(agreeing / scored)
    # The shallow tree really is another model: the test compares something.
    assert int(np.sum(expected["dtc"] == offline["dtc"])) < ROWS
    assert int(np.sum(expected["lda"] == offline["lda"])) == ROWS


def test_a_challenger_killed_under_load_costs_no_request_and_changes_no_answer(
    system: dict[str, LocalProcess], challengers: dict[str, Any]
) -> None:
    final = challengers["final"]
    rows = records(final.features_test.head(50))
    matrix = final.X_test.head(50).to_numpy(dtype=np.float64)
    # Under steady load, shadowed and not, every answer stays the champion's own.
    expected = [
        {"dtc_fbi_code_output": dtc, "lda_fbi_code_output": lda}
        for dtc, lda in zip(
            challengers["champion"]["dtc"].predict(matrix),
            challengers["champion"]["lda"].predict(matrix),
            strict=True,
        )
    ]
    gateway = system["gateway"]
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as http:
            i = 0
            while not stop.is_set():
                response = http.post("/predict", json={"features": rows[i % len(rows)]})
                body = response.json()
                if response.status_code != 200 or body != expected[i % len(rows)]:
                    failures.append(f"{response.status_code} {body}")
                answered[0] += 1
                i += 1

    before = total(shadow_counts(gateway), "crimes_gateway_shadow_dropped_total", model="dtc")
    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    system["dtc-challenger"].stop(signal.SIGKILL)
    time.sleep(3)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert answered[0] > 100
    assert failures == []
    after = total(shadow_counts(gateway), "crimes_gateway_shadow_dropped_total", model="dtc")
    assert after > before  # the dead challenger's records were dropped and counted


def promote(gateway: LocalProcess, *options: str) -> subprocess.CompletedProcess[str]:
    crimes = str(Path(sys.executable).parent / "crimes")
    argv = [crimes, "promote", "--from-shadow", "--gateway", gateway.url, *options]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_promotion_from_shadow_needs_live_and_offline_evidence(
    system: dict[str, LocalProcess], challengers: dict[str, Any]
) -> None:
    """(After the tests above: the gateway has shadowed a few hundred records.) The shallow
    tree is refused on the settings' bars, each refusal tagged on it; with bars an operator
    lowered it takes `champion` (then given back, for the other tests)."""
    import mlflow

    client = mlflow.MlflowClient(TrackingSettings().tracking_uri)
    name = registry.MODELS["dtc"]
    champion = client.get_model_version_by_alias(name, registry.CHAMPION).version
    challenger = challengers["versions"]["dtc"]
    # Its lineage, so that it can be scored on held-out rows (it was fitted on this dataset's
    # training split); removed at the end, as the other tests know it without.
    final = challengers["final"]
    test_f1 = evaluate.evaluate(
        challengers["challenger"]["dtc"], final.X_test.to_numpy(dtype=np.float64),
        final.y_test.astype(str).to_numpy(),
    ).f1_weighted  # fmt: skip
    lineage = {
        Tag.DATASET: str(final.manifest["dataset"]),
        Tag.YEAR: str(YEAR),
        Tag.TEST_F1_WEIGHTED: repr(test_f1),
    }
    for key, value in lineage.items():
        client.set_model_version_tag(name, challenger, key, value)

    refused = promote(system["gateway"], "--model", "dtc", "--min-records", "100000")
    assert refused.returncode == 0, refused.stderr
    (decision,) = json.loads(refused.stdout)
    assert decision["promoted"] is False
    assert decision["reason"].startswith("only ")
    assert decision["champion_f1"] is not None  # scored offline on the same rows too
    assert decision["challenger_f1"] < decision["champion_f1"]  # depth 3 is worse
    offline = promote(system["gateway"], "--model", "dtc", "--min-records", "1",
                      "--min-agreement", "0")  # fmt: skip
    (decision,) = json.loads(offline.stdout)
    assert decision["promoted"] is False
    assert decision["reason"].startswith("offline F1 ")
    tags = client.get_model_version(name, challenger).tags
    assert tags["shadow_promotion.decision"] == registry.CHALLENGER
    assert tags["shadow_promotion.reason"] == decision["reason"]
    assert client.get_model_version_by_alias(name, registry.CHAMPION).version == champion

    # The lda challenger is its champion's own version: nothing to judge, one line, exit 1.
    same = promote(system["gateway"], "--model", "lda")
    assert same.returncode == 1
    assert same.stderr.strip() == (
        f"crimes promote: lda: {registry.MODELS['lda']}: the challenger is the champion "
        f"(version {challengers['versions']['lda']})"
    )

    try:
        lowered = promote(system["gateway"], "--model", "dtc", "--min-records", "1",
                          "--min-agreement", "0", "--min-f1-gain", "-1")  # fmt: skip
        (decision,) = json.loads(lowered.stdout)
        assert decision["promoted"] is True, decision
        assert client.get_model_version_by_alias(name, registry.CHAMPION).version == challenger
        aliases = client.get_model_version(name, challenger).aliases
        assert registry.CHALLENGER not in aliases
        tags = client.get_model_version(name, challenger).tags
        assert tags["shadow_promotion.decision"] == registry.CHAMPION
        assert tags["shadow_promotion.champion_version"] == str(champion)
    finally:
        client.set_registered_model_alias(name, registry.CHAMPION, champion)
        for key in lineage:
            client.delete_model_version_tag(name, challenger, key)
