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

# Threshold grid searched by `calibrate` and drawn by the cost-quality curve.
THRESHOLD_GRID = tuple(round(value, 2) for value in np.arange(0.05, 1.0, 0.05))
MIN_CONFIDENCE_GRID = (0.0, 0.4, 0.5)

# Default calibration target: keep 95 % of the always-complex quality.
DEFAULT_QUALITY_FRACTION = 0.95


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
    when none did. Random routing sends each question to complex with probability
    p and to simple otherwise, with p chosen so that its expected cost equals
    `matched_cost_per_1k_usd`; its numbers are expectations, not a sampled run.
    """
    result: dict[str, Any] = {}
    for index, tier in enumerate(TIERS):
        choices = np.full(len(table), index)
        result[f"always_{tier}"] = score_choices(table, choices).to_json()
    any_correct = table.correct.any(axis=1)
    oracle = np.where(any_correct, table.correct.argmax(axis=1), 0)
    result["oracle"] = score_choices(table, oracle).to_json()

    simple, complex_ = result["always_simple"], result["always_complex"]
    span = complex_["cost_per_1k_usd"] - simple["cost_per_1k_usd"]
    share = (matched_cost_per_1k_usd - simple["cost_per_1k_usd"]) / span
    share = float(np.clip(share, 0.0, 1.0))
    result["random_same_cost"] = {
        "quality": share * complex_["quality"] + (1 - share) * simple["quality"],
        "cost_per_1k_usd": share * complex_["cost_per_1k_usd"]
        + (1 - share) * simple["cost_per_1k_usd"],
        "complex_share": share,
    }
    return result


def decide_all(
    probabilities: NDArray[np.float64], policy: DecisionPolicy
) -> NDArray[np.int_]:
    """Apply `policy` to each row of class probabilities (columns in TIERS order)."""
    decisions = [
        TIERS.index(policy.decide(dict(zip(TIERS, row, strict=True))))
        for row in probabilities.tolist()
    ]
    return np.asarray(decisions, dtype=int)


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
    quality_fraction: float = DEFAULT_QUALITY_FRACTION,
) -> DecisionPolicy:
    """Pick the cheapest grid policy that keeps a fraction of always-complex quality.

    Ties in cost go to the higher quality. When no policy reaches the target, the
    result is the most probable tier with no thresholds: the highest-quality grid
    point is then nearly always "complex for everything", which would make routing
    pointless. `target["reached"]` records which case applied.

    Raises:
        ValueError: there are no routable questions to calibrate on.
    """
    if len(table) == 0:
        raise ValueError(
            "calibration needs questions with outcomes and costs for every tier; "
            "got none"
        )
    target = quality_fraction * float(table.correct[:, -1].mean())
    points = threshold_curve(table, probabilities)
    reaching = [point for point in points if point["quality"] >= target]
    if reaching:
        best = min(reaching, key=lambda p: (p["cost_per_1k_usd"], -p["quality"]))
        chosen = DecisionPolicy.from_json(best["policy"])
    else:
        chosen = DecisionPolicy()
        outcome = score_choices(table, decide_all(probabilities, chosen))
        best = {"policy": chosen.to_json(), **outcome.to_json()}
    return DecisionPolicy(
        chosen.complex_threshold,
        chosen.medium_threshold,
        chosen.min_confidence,
        {
            "quality_fraction_of_always_complex": quality_fraction,
            "reached": bool(reaching),
            "calibration_questions": len(table),
            "calibration_quality": best["quality"],
            "calibration_cost_per_1k_usd": best["cost_per_1k_usd"],
        },
    )
