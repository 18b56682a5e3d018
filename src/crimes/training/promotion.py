"""Champion/challenger promotion, decided in code.

A new version takes `champion` only if its weighted F1 is at least the current champion's on
the SAME raw rows, each version scoring them through its own transformation (`comparison`
chooses the rows and scores both): the champion is loaded and re-scored, never trusted from its
tags, whatever the transformation versions. Only the very first version is judged by the floor
(`TrainingSettings.promotion_floor_f1`). A champion that cannot be re-scored at all (its
artifacts unreadable, or too few rows neither version trained on) is beaten only by a candidate
that reaches the floor and the champion's recorded test F1. A loser gets `challenger`.

Runs may race (two retrains, a retried task): after moving an alias the registry is read back,
and if the champion moved under us the decision is taken again against the new champion, so the
best of the racing versions ends as champion. An alias is only ever set on a registered version
whose registration finished, so it can never point at a missing version; nothing here deletes
versions or aliases, so a model that had a champion keeps one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crimes.ops.logs import get_logger
from crimes.registry import CHALLENGER, CHAMPION, Tag

log = get_logger(__name__)


class PromotionError(RuntimeError):
    pass


@dataclass(frozen=True)
class Comparison:
    """Both versions scored on the same rows; `champion_f1` None when the champion could not be
    re-scored (`rule` says why), `candidate_f1` then the candidate's own test F1."""

    candidate_f1: float
    champion_f1: float | None
    rows: int
    rule: str
    rows_sha256: str = ""


@dataclass(frozen=True)
class Decision:
    version: str
    promoted: bool
    reason: str
    candidate_f1: float
    champion_version: str | None
    champion_f1: float | None
    rows: int = 0
    rows_rule: str = ""
    rows_sha256: str = ""

    def as_tags(self) -> dict[str, str]:
        return {
            "promotion.decision": CHAMPION if self.promoted else CHALLENGER,
            "promotion.reason": self.reason,
            "promotion.candidate_f1_weighted": repr(self.candidate_f1),
            "promotion.champion_version": self.champion_version or "",
            "promotion.champion_f1_weighted": (
                "" if self.champion_f1 is None else repr(self.champion_f1)
            ),
            "promotion.rows": str(self.rows),
            "promotion.rows_rule": self.rows_rule[:4000],
            "promotion.rows_sha256": self.rows_sha256,
        }


def decide(
    candidate_f1: float,
    champion_f1: float | None,
    has_champion: bool,
    floor: float,
    candidate_is_newer: bool = True,
    champion_recorded_f1: float | None = None,
) -> tuple[bool, str]:
    """Whether the candidate takes `champion`, and why (pure: the policy in one place).

    "At least the champion's F1" lets a newer version win a tie; between racing versions the
    newer one wins the tie too, so two equal candidates cannot take the alias in turns forever.
    """
    if not has_champion:
        if candidate_f1 >= floor:
            return True, f"first champion: test F1 {candidate_f1:.6f} >= floor {floor}"
        return False, f"no champion yet, but test F1 {candidate_f1:.6f} < floor {floor}"
    if champion_f1 is not None:
        if candidate_f1 > champion_f1 or (candidate_f1 == champion_f1 and candidate_is_newer):
            return True, f"F1 {candidate_f1:.6f} >= champion's {champion_f1:.6f} on the same rows"
        return False, f"F1 {candidate_f1:.6f} < champion's {champion_f1:.6f} on the same rows"
    # The champion could not be re-scored: it is beaten only by clearing both bars it set.
    bar = max(floor, champion_recorded_f1 if champion_recorded_f1 is not None else 1.0)
    if candidate_f1 >= bar:
        return True, (
            f"champion not re-scorable: test F1 {candidate_f1:.6f} >= the floor and the "
            f"champion's recorded F1 ({bar})"
        )
    return False, (
        f"champion not re-scorable: test F1 {candidate_f1:.6f} < the floor or the champion's "
        f"recorded F1 ({bar})"
    )


def current_champion(client: Any, name: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except Exception as error:
        if (
            "RESOURCE_DOES_NOT_EXIST" in str(getattr(error, "error_code", ""))
            or "not found" in str(error).lower()
        ):
            return None
        raise


def wait_ready(client: Any, name: str, version: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get_model_version(name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise PromotionError(f"{name} version {version} is not ready ({status})")
        time.sleep(0.5)


def set_alias(client: Any, name: str, alias: str, version: str, attempts: int = 5) -> None:
    """Move an alias; a concurrent write of the same alias makes the registry's insert collide
    (a unique-key error), which only means someone else wrote it first: write again."""
    for attempt in range(1, attempts + 1):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except Exception as error:
            text = str(error)
            if attempt == attempts or not ("UniqueViolation" in text or "duplicate key" in text):
                raise
            log.warning("promotion.alias_write_collided", name=name, alias=alias, attempt=attempt)
            time.sleep(0.05 * attempt)


def _recorded_f1(champion: Any | None) -> float | None:
    try:
        return float(champion.tags[Tag.TEST_F1_WEIGHTED]) if champion is not None else None
    except (KeyError, TypeError, ValueError):
        return None


def _version_of(model_version: Any | None) -> str | None:
    return None if model_version is None else str(model_version.version)


def promote(
    client: Any,
    name: str,
    version: str,
    candidate_f1: float,
    compare: Callable[[Any], Comparison],
    floor: float,
    attempts: int = 5,
    settle_seconds: float = 0.5,
) -> Decision:
    """Give `version` the alias it earns; `compare(champion_version)` scores the champion and
    the candidate on the same rows (`candidate_f1` is the candidate's own test F1, what the
    floor judges when there is no champion).

    The registry has no compare-and-set, so a concurrent promotion that read the same champion
    can overwrite this one's write after it was checked. The champion is read again just before
    the write, and a decision stands only when the champion is still what it expects
    `settle_seconds` after the write; otherwise it is made again against the new champion (so
    the better of two racers ends up champion either way).
    """
    wait_ready(client, name, version)
    for attempt in range(1, attempts + 1):
        champion = current_champion(client, name)
        if champion is not None and str(champion.version) == version:
            return Decision(version, True, "already champion", candidate_f1, version, candidate_f1)
        comparison = (
            compare(champion)
            if champion is not None
            else Comparison(candidate_f1, None, 0, "no champion: the candidate's own test split")
        )
        promoted, reason = decide(
            comparison.candidate_f1,
            comparison.champion_f1,
            champion is not None,
            floor,
            candidate_is_newer=champion is None or int(version) > int(champion.version),
            champion_recorded_f1=_recorded_f1(champion),
        )
        # Rescoring takes a while: decided against a champion that has moved since, decide
        # again. This keeps the read-to-write gap far below the settle interval.
        before = current_champion(client, name)
        if _version_of(before) != _version_of(champion):
            log.warning("promotion.raced", name=name, version=version, attempt=attempt)
            continue
        set_alias(client, name, CHAMPION if promoted else CHALLENGER, version)
        expected = version if promoted else _version_of(champion)
        after = current_champion(client, name)
        if _version_of(after) == expected:
            time.sleep(settle_seconds)
            after = current_champion(client, name)
        if _version_of(after) == expected:
            decision = Decision(
                version=version,
                promoted=promoted,
                reason=reason,
                candidate_f1=comparison.candidate_f1,
                champion_version=_version_of(champion),
                champion_f1=comparison.champion_f1,
                rows=comparison.rows,
                rows_rule=comparison.rule,
                rows_sha256=comparison.rows_sha256,
            )
            log.info("promotion.decided", name=name, **decision.as_tags())
            return decision
        log.warning(
            "promotion.raced",
            name=name,
            version=version,
            attempt=attempt,
            champion_now=None if after is None else after.version,
        )
    raise PromotionError(f"{name} version {version}: the champion kept moving; gave up")
