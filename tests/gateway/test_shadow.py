"""Shadow scoring's own logic, with a challenger double: what is queued, scored, compared and
dropped, and that offering never waits. The real thing runs in test_shadow_e2e.py."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from crimes.gateway.calls import ModelCallError, ServiceState
from crimes.gateway.metrics import GatewayMetrics
from crimes.gateway.shadow import Records, Shadow, merged
from crimes.protocol import inference
from crimes.protocol.outcomes import Outcome


class Challenger:
    """Answers each row's first value as its FBI code (or fails, or is slow, when told)."""

    def __init__(self, delay: float = 0.0, ready: bool = True, fail: bool = False) -> None:
        self.state = ServiceState(ready=ready, model_version="9", transformation_version="tf-9")
        self.deadline_seconds = 0.2
        self.address = "challenger:1"
        self.model_name = "dtc_model_prod"
        self.delay = delay
        self.fail = fail
        self.calls: list[tuple[int, list[str]]] = []

    async def refresh(self) -> ServiceState:
        return self.state

    async def infer(
        self,
        features: np.ndarray,
        version: str,
        probabilities: bool,
        request_ids: Any = (),
        confidence: bool = False,
    ) -> inference.InferOutput:
        self.calls.append((len(features), list(request_ids)))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ModelCallError(Outcome.ERROR, "broken")
        return inference.InferOutput(
            model_version="9",
            transformation_version=version,
            labels=[f"{int(row[0]):02d}" for row in features],
            probabilities=None,
            classes=None,
        )

    async def close(self) -> None:
        pass


async def transform(challenger: Any, records: Records) -> tuple[str, np.ndarray]:
    """The records' `code` values as the one feature (a transformation double)."""
    codes = [records.row["code"]] if records.row is not None else records.columns["code"]  # type: ignore[index]
    return "tf-9", np.array([[float(c)] for c in codes])


def shadow(challenger: Challenger, **options: Any) -> tuple[Shadow, GatewayMetrics]:
    metrics = GatewayMetrics()
    settings = {"share": 1.0, "capacity_records": 100, "linger_seconds": 0.01, **options}
    return Shadow({"dtc": challenger}, transform, metrics, **settings), metrics  # type: ignore[dict-item]


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def one(code: str) -> Records:
    return Records({"code": code}, None, 1)


def test_challenger_codes_are_compared_with_the_champions_per_version_pair() -> None:
    async def scenario() -> tuple[Shadow, GatewayMetrics, Challenger]:
        challenger = Challenger()
        shade, metrics = shadow(challenger)
        await shade.start()
        # The champion said 07 for all four records; the challenger says each record's code.
        shade.offer(one("7"), {"dtc": (["07"], "3")}, "req-1")
        shade.offer(one("6"), {"dtc": (["07"], "3")}, "req-2")
        batch = Records(None, {"code": ["7", "7"]}, 2)
        shade.offer(batch, {"dtc": (["07", "07"], "3"), "lda": (["07", "07"], "1")}, "req-3")
        await asyncio.sleep(0.1)
        await shade.stop()
        return shade, metrics, challenger

    shade, metrics, challenger = asyncio.run(scenario())
    # One call for the three requests' four records (they arrived within the linger).
    assert challenger.calls == [(4, ["req-1", "req-2", "req-3"])]
    versions = {"model": "dtc", "champion_version": "3", "challenger_version": "9"}
    assert value(metrics, "crimes_gateway_shadow_sent_total", model="dtc") == 4
    assert value(metrics, "crimes_gateway_shadow_records_total", **versions) == 4
    assert value(metrics, "crimes_gateway_shadow_agreements_total", **versions) == 3
    disagreement = {**versions, "champion_code": "07", "challenger_code": "06"}
    assert value(metrics, "crimes_gateway_shadow_disagreements_total", **disagreement) == 1
    described = shade.describe("dtc")
    assert described is not None
    assert described["agreement"] == 0.75
    assert described["shadow_records"] == 4
    assert shade.describe("lda") is None  # no challenger for lda: nothing queued for it


def test_offering_never_waits_and_a_full_queue_drops_and_counts() -> None:
    async def scenario() -> GatewayMetrics:
        challenger = Challenger(delay=0.05)
        shade, metrics = shadow(challenger, capacity_records=3)
        await shade.start()
        for i in range(10):
            shade.offer(one("7"), {"dtc": (["07"], "3")}, f"req-{i}")  # synchronous: no await
        await asyncio.sleep(0.2)
        await shade.stop()
        return metrics

    metrics = asyncio.run(scenario())
    assert value(metrics, "crimes_gateway_shadow_sent_total", model="dtc") == 3
    assert (
        value(metrics, "crimes_gateway_shadow_dropped_total", model="dtc", reason="queue_full") == 7
    )


def test_a_slow_failing_or_unready_challenger_costs_shadow_records_only() -> None:
    cases = {
        "challenger_timeout": Challenger(delay=1.0),
        "challenger_error": Challenger(fail=True),
        "challenger_not_ready": Challenger(ready=False),
    }
    for reason, challenger in cases.items():

        async def scenario(challenger: Challenger = challenger) -> GatewayMetrics:
            shade, metrics = shadow(challenger)
            await shade.start()
            shade.offer(one("7"), {"dtc": (["07"], "3")})
            await asyncio.sleep(0.4)
            # Still working after the failure: the next records are taken too.
            shade.offer(one("7"), {"dtc": (["07"], "3")})
            await asyncio.sleep(0.4)
            await shade.stop()
            return metrics

        metrics = asyncio.run(scenario())
        assert (
            value(metrics, "crimes_gateway_shadow_dropped_total", model="dtc", reason=reason) == 2
        )
        assert (
            value(
                metrics,
                "crimes_gateway_shadow_records_total",
                model="dtc",
                champion_version="3",
                challenger_version="9",
            )
            == 0
        )


def test_only_the_sampled_share_and_only_answered_models_are_shadowed() -> None:
    draws = iter([0.05, 0.5, 0.29, 0.31, 0.0])
    shade, _ = shadow(Challenger(), share=0.3, sample=lambda: next(draws))
    for _ in range(4):
        shade.offer(one("7"), {"dtc": (["07"], "3")})
    assert shade.queued["dtc"] == 2  # the draws under 0.3
    # A champion that did not answer (timeout: no labels) gives nothing to compare with.
    shade.offer(one("7"), {"dtc": (None, "3")})
    assert shade.queued["dtc"] == 2
    off, _ = shadow(Challenger(), share=0.0)
    off.offer(one("7"), {"dtc": (["07"], "3")})
    assert off.queued["dtc"] == 0


def test_merged_records_keep_their_order_across_rows_and_batches() -> None:
    parts = [one("1"), Records(None, {"code": ["2", "3"]}, 2), one("4")]
    batch = merged(parts)
    assert batch.count == 4
    assert batch.columns == {"code": ["1", "2", "3", "4"]}


def test_the_challengers_answers_go_to_the_prediction_log_under_their_requests() -> None:
    from crimes.feedback.keys import RecordKeys
    from crimes.feedback.served import Served

    class Kept:
        def __init__(self) -> None:
            self.answers: list[Served] = []

        def append(self, answer: Served) -> None:
            self.answers.append(answer)

    kept = Kept()

    async def scenario() -> None:
        shade, _ = shadow(Challenger())
        shade.log = kept  # type: ignore[assignment]
        await shade.start()
        single = Records({"code": "7"}, None, 1, RecordKeys(["11"], [None]))
        shade.offer(single, {"dtc": (["07"], "3")}, "req-1")
        keys = RecordKeys(["12", None], [None, "JA2"])
        batch = Records(None, {"code": ["6", "7"]}, 2, keys)
        shade.offer(batch, {"dtc": (["07", "07"], "3")}, "req-2")
        await asyncio.sleep(0.1)
        await shade.stop()

    asyncio.run(scenario())
    assert [(a.request_id, a.role, a.model_version, list(a.codes)) for a in kept.answers] == [
        ("req-1", "challenger", "9", ["07"]),
        ("req-2", "challenger", "9", ["06", "07"]),
    ]
    assert kept.answers[1].keys is not None
    assert kept.answers[1].keys.case_numbers == [None, "JA2"]
