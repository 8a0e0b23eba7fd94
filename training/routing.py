"""Routing quality and cost of tier decisions, and threshold calibration.

Only questions with a recorded outcome and cost for all three tier models can be
scored: in the current data these are the RouterBench rows (ARC-Challenge, MBPP,
WinoGrande). Quality is the fraction of questions that the chosen tier's model
answered correctly, and cost is the mean recorded USD cost of those calls, scaled
to 1,000 requests.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from router_service.classifier import TIERS, DecisionPolicy
from training.datasets import LabelledQuery

# Threshold grid searched by `calibrate` and drawn by the cost-quality curve. The
# ends are included, so the grid contains always-medium (complex threshold 1.0 and
# medium threshold 0.0) and always-complex (complex threshold 0.0).
THRESHOLD_GRID = tuple(round(value, 2) for value in np.arange(0.0, 1.0001, 0.05))
MIN_CONFIDENCE_GRID = (0.0, 0.4, 0.5, 0.6)

MAX_COST_TARGET = "max_cost_per_1k_usd"
MIN_QUALITY_TARGET = "min_quality_fraction_of_always_complex"


@dataclass(frozen=True)
class CalibrationTarget:
    """The goal of `calibrate`, as stored in the manifest.

    `max_cost_per_1k_usd`: the best quality whose cost per 1,000 requests is at
    most `value` USD; `value` None means the always-medium cost on the calibration
    questions. `min_quality_fraction_of_always_complex`: the lowest cost whose
    quality is at least `value` times the always-complex quality.
    """

    kind: str = MAX_COST_TARGET
    value: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in (MAX_COST_TARGET, MIN_QUALITY_TARGET):
            raise ValueError(
                f"calibration target kind must be {MAX_COST_TARGET!r} or "
                f"{MIN_QUALITY_TARGET!r}; got {self.kind!r}"
            )
        if self.kind == MIN_QUALITY_TARGET and (
            self.value is None or not 0.0 < self.value <= 1.0
        ):
            raise ValueError(
                "the minimum quality must be a fraction of the always-complex "
                f"quality in (0, 1]; got {self.value!r}. Try 0.8."
            )
        if self.kind == MAX_COST_TARGET and self.value is not None and self.value < 0:
            raise ValueError(
                f"the maximum cost per 1k requests must be 0 or more USD; got "
                f"{self.value!r}. Leave it unset for the always-medium cost."
            )


@dataclass(frozen=True)
class RoutingTable:
    """Per-question outcomes and costs of the three tier models, in TIERS order."""

    correct: NDArray[np.bool_]
    cost_usd: NDArray[np.float64]

    @classmethod
    def from_items(cls, items: Sequence[LabelledQuery]) -> RoutingTable:
        rows = [item for item in items if is_routable(item)]
        correct = [[row.correct_by_tier[tier] for tier in TIERS] for row in rows]
        cost = [[row.cost_by_tier_usd[tier] for tier in TIERS] for row in rows]
        return cls(
            np.asarray(correct, dtype=bool).reshape(-1, len(TIERS)),
            np.asarray(cost, dtype=np.float64).reshape(-1, len(TIERS)),
        )

    def __len__(self) -> int:
        return int(self.correct.shape[0])


@dataclass(frozen=True)
class RoutingOutcome:
    """Quality (fraction correct) and USD cost per 1,000 requests of one policy."""

    quality: float
    cost_per_1k_usd: float

    def to_json(self) -> dict[str, float]:
        return {"quality": self.quality, "cost_per_1k_usd": self.cost_per_1k_usd}


def is_routable(item: LabelledQuery) -> bool:
    """Tell whether every tier's outcome and cost is recorded for this question."""
    return all(
        tier in item.correct_by_tier and tier in item.cost_by_tier_usd for tier in TIERS
    )


def score_choices(table: RoutingTable, choices: NDArray[np.int_]) -> RoutingOutcome:
    """Score one tier index per question (0 simple, 1 medium, 2 complex)."""
    rows = np.arange(len(table))
    return RoutingOutcome(
        quality=float(table.correct[rows, choices].mean()),
        cost_per_1k_usd=float(table.cost_usd[rows, choices].mean() * 1000),
    )


def baselines(table: RoutingTable, matched_cost_per_1k_usd: float) -> dict[str, Any]:
    """Score fixed-tier routing, the oracle and random routing at a given cost.

    The oracle picks the cheapest tier whose model answered correctly, or simple
    when none did. Random routing mixes the two fixed tiers whose costs enclose
    `matched_cost_per_1k_usd` (simple and medium, or medium and complex), so that
    its expected cost equals that cost; its numbers are expectations, not a
    sampled run. A cost outside the fixed tiers' range is clipped to it.
    """
    result: dict[str, Any] = {}
    for index, tier in enumerate(TIERS):
        choices = np.full(len(table), index)
        result[f"always_{tier}"] = score_choices(table, choices).to_json()
    any_correct = table.correct.any(axis=1)
    oracle = np.where(any_correct, table.correct.argmax(axis=1), 0)
    result["oracle"] = score_choices(table, oracle).to_json()
    result["random_same_cost"] = random_mix(
        [result[f"always_{tier}"] for tier in TIERS], matched_cost_per_1k_usd
    )
    return result


def random_mix(fixed: list[dict[str, float]], cost_per_1k_usd: float) -> dict[str, Any]:
    """Mix two neighbouring fixed tiers at random so the mix costs `cost_per_1k_usd`.

    `fixed` contains the always-simple, always-medium and always-complex outcomes.
    Returns the expected quality and cost and the share of each tier.
    """
    costs = [point["cost_per_1k_usd"] for point in fixed]
    cost = float(np.clip(cost_per_1k_usd, min(costs), max(costs)))
    upper = 1 if cost <= costs[1] else 2
    span = costs[upper] - costs[upper - 1]
    share = (cost - costs[upper - 1]) / span if span > 0 else 0.0
    shares = [0.0] * len(fixed)
    shares[upper - 1], shares[upper] = 1.0 - share, share
    return {
        "quality": sum(s * p["quality"] for s, p in zip(shares, fixed, strict=True)),
        "cost_per_1k_usd": sum(
            s * p["cost_per_1k_usd"] for s, p in zip(shares, fixed, strict=True)
        ),
        "tier_share": dict(zip(TIERS, shares, strict=True)),
    }


def decide_all(
    probabilities: NDArray[np.float64], policy: DecisionPolicy
) -> NDArray[np.int_]:
    """Apply `policy` to each row of class probabilities (columns in TIERS order).

    This is `DecisionPolicy.decide` vectorized, and a test checks that both agree.
    """
    if policy.complex_threshold is None or policy.medium_threshold is None:
        choices = probabilities.argmax(axis=1)
    else:
        complex_, medium = probabilities[:, 2], probabilities[:, 1]
        choices = np.where(
            complex_ >= policy.complex_threshold,
            2,
            np.where(medium + complex_ >= policy.medium_threshold, 1, 0),
        )
    unsure = probabilities.max(axis=1) < policy.min_confidence
    return np.where(unsure & (choices < 2), choices + 1, choices).astype(int)


def threshold_curve(
    table: RoutingTable, probabilities: NDArray[np.float64]
) -> list[dict[str, Any]]:
    """Score every policy in the threshold grid on the routable questions."""
    points = []
    grid = itertools.product(THRESHOLD_GRID, THRESHOLD_GRID, MIN_CONFIDENCE_GRID)
    for complex_threshold, medium_threshold, min_confidence in grid:
        policy = DecisionPolicy(complex_threshold, medium_threshold, min_confidence)
        outcome = score_choices(table, decide_all(probabilities, policy))
        points.append({"policy": policy.to_json(), **outcome.to_json()})
    return points


def calibrate(
    table: RoutingTable,
    probabilities: NDArray[np.float64],
    target: CalibrationTarget | None = None,
) -> DecisionPolicy:
    """Pick the grid policy that meets `target` (default: the always-medium cost).

    With a cost target, the best quality at or under the cost wins, and ties go to
    the lower cost. With a quality target, the lowest cost at or over the quality
    wins, and ties go to the higher quality. Points that remain tied go to the
    highest complex threshold, then the lowest medium threshold. When no grid
    point meets the target, the nearest one wins (the cheapest, or the best
    quality) and `target["reached"]` is false.

    Raises:
        ValueError: there are no routable questions to calibrate on.
    """
    if len(table) == 0:
        raise ValueError(
            "calibration needs questions with outcomes and costs for every tier; "
            "got none"
        )
    target = target or CalibrationTarget()
    fixed = baselines(table, 0.0)
    points = threshold_curve(table, probabilities)
    if target.kind == MAX_COST_TARGET:
        limit = target.value
        if limit is None:
            limit = fixed["always_medium"]["cost_per_1k_usd"]
        meeting = [p for p in points if p["cost_per_1k_usd"] <= limit + 1e-12]
        best_of = _best_quality
        nearest = _lowest_cost(points)
    else:
        if target.value is None:
            raise ValueError("a minimum-quality target needs a value")
        limit = target.value * fixed["always_complex"]["quality"]
        meeting = [p for p in points if p["quality"] >= limit - 1e-12]
        best_of = _lowest_cost
        nearest = _best_quality(points)
    best = best_of(meeting) if meeting else nearest
    chosen = DecisionPolicy.from_json(best["policy"])
    return DecisionPolicy(
        chosen.complex_threshold,
        chosen.medium_threshold,
        chosen.min_confidence,
        {
            "kind": target.kind,
            "value": target.value,
            "limit": limit,
            "reached": bool(meeting),
            "calibration_questions": len(table),
            "calibration_quality": best["quality"],
            "calibration_cost_per_1k_usd": best["cost_per_1k_usd"],
        },
    )


def _caution(point: dict[str, Any]) -> tuple[float, float, float]:
    # Among points with equal validation outcomes, prefer the highest complex
    # threshold, then the lowest medium threshold and min_confidence: on new
    # queries that point sends the fewest to the expensive tier and the fewest
    # to the weak tier.
    policy = point["policy"]
    return (
        policy["complex_threshold"],
        -policy["medium_threshold"],
        -policy["min_confidence"],
    )


def _best_quality(points: list[dict[str, Any]]) -> dict[str, Any]:
    return max(points, key=lambda p: (p["quality"], -p["cost_per_1k_usd"], _caution(p)))


def _lowest_cost(points: list[dict[str, Any]]) -> dict[str, Any]:
    return max(points, key=lambda p: (-p["cost_per_1k_usd"], p["quality"], _caution(p)))
