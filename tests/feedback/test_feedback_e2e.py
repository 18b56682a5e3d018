"""Ground truth end to end, on real rows and real processes: the session's champions (trained by
the training DAG on the file's first 40,000 rows, October to December) serve records of months
they never saw, replayed from a real portal file through the gateway with their keys; the dtc
champion is swapped for another version half-way. The gateway's prediction log reaches the lake
(SeaweedFS); `crimes etl` of the same file publishes the labels; `crimes evaluate` joins them.
Its realized accuracy per served version equals the test's own count from the answers it got,
in the lake table and in the registry. A SIGKILL loses only the rows the log had not written,
fewer than its memory bound, and always the latest ones."""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from crimes import registry
from crimes.etl.replay import ReplayReport, records_of, replay
from crimes.feedback import inputs, results
from crimes.lake import datasets, layout
from crimes.lake.storage import Lake
from crimes.registry import Tag
from crimes.settings import TrackingSettings
from tests.support.stack import YEAR
from tests.support.system import listed_models, serving_system

pytestmark = pytest.mark.e2e

CRIMES = str(Path(sys.executable).parent / "crimes")
# Records per month file: enough for every served version to be judged on hundreds of them.
RECORDS = 3000


def month_file(real_data: Path, folder: Path, month: int) -> Path:
    """RECORDS real rows of one month of 2024, as the portal's CSV export has them."""
    with gzip.open(real_data, "rt") as text:
        rows = pd.read_csv(text, dtype=str, keep_default_na=False)
    when = pd.to_datetime(rows["date"], format="%m/%d/%Y %I:%M:%S %p")
    picked = rows[when.dt.month == month].head(RECORDS)
    path = folder / f"crimes-2024-{month:02d}.csv.gz"
    with gzip.open(path, "wt") as out:
        picked.to_csv(out, index=False)
    return path


@pytest.fixture(scope="module")
def files(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("months")
    return {"replay": month_file(real_data, folder, 9), "kill": month_file(real_data, folder, 8)}


@pytest.fixture(scope="module")
def other_dtc(trained: dict[str, Any]) -> Iterator[dict[str, str]]:
    """A second dtc version (a shallower tree, registered as the training does), and the
    champion's; the champion alias is given back at the end."""
    import mlflow
    from sklearn.tree import DecisionTreeClassifier

    from crimes.training import models, pipeline

    final = datasets.load_final(Lake(), YEAR)
    mlflow.set_tracking_uri(TrackingSettings().tracking_uri)
    client = mlflow.MlflowClient()
    name = registry.MODELS["dtc"]
    champion = client.get_model_version_by_alias(name, registry.CHAMPION).version
    tree = DecisionTreeClassifier(max_depth=6, random_state=0).fit(
        final.X_train.to_numpy(dtype=np.float64), final.y_train
    )
    with mlflow.start_run(run_name="feedback-test-version"):
        fitted = models.Fitted(kind="dtc", model=tree, params={"max_depth": 6})
        version, _ = pipeline.register(fitted, final, name)
    client.set_model_version_tag(
        name, version, Tag.TRANSFORMATION_VERSION, final.transformation_version
    )
    try:
        yield {"champion": str(champion), "other": str(version)}
    finally:
        client.set_registered_model_alias(name, registry.CHAMPION, champion)


LOG_SETTINGS = {"CRIMES_PREDICTION_LOG_FLUSH_SECONDS": "1"}


def served_versions(report: ReplayReport) -> Counter[tuple[str, str]]:
    return Counter(
        (model, answer.versions[model])
        for answer in report.answers
        for model in ("dtc", "lda")
        if answer.codes[model] is not None
    )


def own_accuracy(reports: list[ReplayReport]) -> dict[tuple[str, str], tuple[int, float]]:
    """Per (model, version): how many records it answered, and the share it got right."""
    right: Counter[tuple[str, str]] = Counter()
    answered: Counter[tuple[str, str]] = Counter()
    for report in reports:
        for answer in report.answers:
            for model in ("dtc", "lda"):
                code = answer.codes[model]
                if code is not None:
                    key = (model, answer.versions[model])
                    answered[key] += 1
                    right[key] += code == answer.true_code
    return {key: (answered[key], right[key] / answered[key]) for key in answered}


def serves(listed: dict[str, Any], model: str, version: str) -> bool:
    """Every replica of the model serves that version, as /models lists them."""
    replicas = listed[model]["replicas"]
    return bool(replicas) and all(r.get("model_version") == version for r in replicas)


def run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRIMES, *argv], capture_output=True, text=True, timeout=600, env=os.environ | env
    )


@contextlib.contextmanager
def pointer_kept(lake: Lake) -> Iterator[None]:
    """The year's published pointer as it was: other tests train on the session's dataset."""
    key = layout.pointer_key(YEAR)
    before = lake.read_bytes(key)
    try:
        yield
    finally:
        lake.write_bytes(key, before)


def test_realized_accuracy_per_served_version_is_the_answers_own(
    trained: dict[str, Any],
    other_dtc: dict[str, str],
    files: dict[str, Path],
    tmp_path: Path,
) -> None:
    import mlflow

    records = records_of(str(files["replay"]), None, None)
    half = len(records) // 2
    with serving_system(tmp_path, env=LOG_SETTINGS) as started:
        gateway = started["gateway"]
        first = replay(records.iloc[:half], gateway.url, batch_size=400)
        mlflow.MlflowClient().set_registered_model_alias(
            registry.MODELS["dtc"], registry.CHAMPION, other_dtc["other"]
        )
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            listed_models(http, lambda m: serves(m, "dtc", other_dtc["other"]), timeout=90)
        second = replay(records.iloc[half:], gateway.url, batch_size=400)
        # A graceful stop: everything the log holds is written before the process ends.
        gateway.stop(signal.SIGTERM)
        stopped = [e for e in gateway.logs() if e.get("event") == "prediction_log.stopped"]
        assert [e["rows_held"] for e in stopped] == [0], gateway.tail()
    assert served_versions(first)[("dtc", other_dtc["champion"])] == half
    assert served_versions(second)[("dtc", other_dtc["other"])] == len(records) - half

    lake = Lake()
    with pointer_kept(lake):
        # The ETL reads local files from the one folder its deployment names.
        folder = str(files["replay"].parent)
        etl = run("etl", "--source", str(files["replay"]), "--year", str(YEAR),
                  CRIMES_SOURCE_FOLDER=folder)  # fmt: skip
        assert etl.returncode == 0, etl.stderr[-3000:]
    evaluated = run("evaluate")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    print(evaluated.stdout)  # the table (pytest -s shows it)

    expected = own_accuracy([first, second])
    assert set(expected) == {
        ("dtc", other_dtc["champion"]),
        ("dtc", other_dtc["other"]),
        ("lda", next(v for m, v in expected if m == "lda")),
    }
    # The log holds every answer of the replay, none lost on the graceful stop.
    logged = inputs.read_log(lake)
    ours = logged[logged["record_id"].isin(set(records["id"].astype(str)))]
    assert Counter(zip(ours["model"], ours["model_version"], strict=True)) == {
        key: answered for key, (answered, _) in expected.items()
    }
    # The table `crimes evaluate` published: per served version, the replay's records are its
    # labelled ones (other tests' predictions carry no key), and its realized accuracy is the
    # share the test counted right, inside its interval.
    published = results.read_tables(lake)["versions"]
    champions = published[published["role"] == "champion"].set_index(["model", "model_version"])
    for key, (answered, accuracy) in expected.items():
        figures: Any = champions.loc[key]
        assert figures["labelled"] == answered
        assert figures["accuracy"] == pytest.approx(accuracy, abs=1e-12)
        assert figures["ci_low"] < accuracy < figures["ci_high"]
        assert 0 < figures["estimate"] <= 1
        assert f"{key[0]:<6}champion" in evaluated.stdout
    # And the registry: each served version carries its realized accuracy.
    client = mlflow.MlflowClient()
    for (model, version), (_, accuracy) in expected.items():
        tags = client.get_model_version(registry.MODELS[model], version).tags
        assert float(tags[f"{Tag.SERVED_ACCURACY}.champion"]) == pytest.approx(accuracy, abs=1e-4)


def test_a_sigkill_loses_only_the_latest_unwritten_rows_within_the_bound(
    trained: dict[str, Any], files: dict[str, Path], tmp_path: Path
) -> None:
    bounded = {
        "CRIMES_PREDICTION_LOG_FLUSH_SECONDS": "3600",  # only the row count writes
        "CRIMES_PREDICTION_LOG_FLUSH_ROWS": "1000",
        "CRIMES_PREDICTION_LOG_BUFFER_ROWS": "3000",
    }
    records = records_of(str(files["kill"]), None, None)
    with serving_system(tmp_path, env=bounded) as started:
        gateway = started["gateway"]
        report = replay(records.iloc[:-10], gateway.url, batch_size=250)
        # The last 10 records: answered, far from a flush (20 rows of 1,000), then the kill.
        last = replay(records.iloc[-10:], gateway.url, batch_size=10)
        gateway.stop(signal.SIGKILL)
    assert report.failed_batches == last.failed_batches == 0
    sent = [str(i) for i in records["id"]]
    logged = inputs.read_log(Lake())
    missing = {}
    for model in ("dtc", "lda"):
        written = logged[(logged["model"] == model) & logged["record_id"].isin(set(sent))]
        assert written["record_id"].is_unique
        # The rows written are the first ones answered: a kill costs the latest only...
        assert set(written["record_id"]) == set(sent[: len(written)])
        missing[model] = len(sent) - len(written)
        assert missing[model] >= 10  # ... and those it had not written are lost
    # Never more than the memory bound (rows of both models).
    assert sum(missing.values()) <= 3000, missing


def test_the_dag_runs_the_same_evaluation_and_audits_its_check(
    airflow_env: dict[str, str], trained: dict[str, Any], files: dict[str, Path], tmp_path: Path
) -> None:
    """`evaluate_served_predictions` (as Airflow runs it on the ETL's Asset): the same join as
    `crimes evaluate`, a new table behind the pointer, and the accuracy check in its audit log
    (calm: the champions are right far above the threshold)."""
    from crimes.local import airflow_runner
    from crimes.orchestration import assets, retrain_audit

    lake = Lake()
    records = records_of(str(files["replay"]), None, None).head(400)
    with serving_system(tmp_path, env=LOG_SETTINGS) as started:
        replay(records, started["gateway"].url, batch_size=200)
        started["gateway"].stop(signal.SIGTERM)
    before = (
        lake.read_json(layout.evaluation_pointer())["evaluated_at"]
        if lake.exists(layout.evaluation_pointer())
        else None
    )
    audited = len(retrain_audit.entries(lake, retrain_audit.ACCURACY_PREFIX))
    result = airflow_runner.dags_test(airflow_env, assets.EVALUATION_DAG_ID, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = lake.read_json(layout.evaluation_pointer())
    assert after["evaluated_at"] != before
    published = results.read_tables(lake)["versions"]
    assert published["labelled"].sum() >= len(records)
    entries = retrain_audit.entries(lake, retrain_audit.ACCURACY_PREFIX)
    assert len(entries) == audited + 1
    assert entries[-1]["action"] == "calm", entries[-1]
    assert set(entries[-1]["models"]) == {"dtc", "lda"}
