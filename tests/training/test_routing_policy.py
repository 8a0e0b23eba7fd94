"""Routing quality, cost, baselines and threshold calibration on small tables."""

from __future__ import annotations

import numpy as np
import pytest

from router_service.classifier import DecisionPolicy
from training.datasets import LabelledQuery
from training.routing import (
    RoutingTable,
    baselines,
    calibrate,
    is_routable,
    score_choices,
)

COST = {"simple": 0.001, "medium": 0.002, "complex": 0.010}


def _row(simple: bool, medium: bool, complex_: bool) -> LabelledQuery:
    correct = {"simple": simple, "medium": medium, "complex": complex_}
    return LabelledQuery("q", "simple", "test", correct, COST)


# Question 0 is easy, 1 needs medium, 2 needs complex, 3 nobody answers.
ROWS = [
    _row(True, True, True),
    _row(False, True, True),
    _row(False, False, True),
    _row(False, False, False),
]


def test_table_keeps_only_fully_recorded_rows() -> None:
    partial = LabelledQuery("q", "medium", "mmlu", {"medium": True, "complex": True})

    table = RoutingTable.from_items([*ROWS, partial])

    assert not is_routable(partial)
    assert len(table) == 4
    assert table.correct.shape == (4, 3)


def test_score_choices_counts_quality_and_cost() -> None:
    table = RoutingTable.from_items(ROWS)

    outcome = score_choices(table, np.array([0, 1, 2, 0]))

    assert outcome.quality == pytest.approx(0.75)
    assert outcome.cost_per_1k_usd == pytest.approx((1 + 2 + 10 + 1) / 4)


def test_baselines_include_oracle_and_fixed_tiers() -> None:
    table = RoutingTable.from_items(ROWS)

    result = baselines(table, matched_cost_per_1k_usd=5.5)

    assert result["always_simple"]["quality"] == pytest.approx(0.25)
    assert result["always_complex"]["quality"] == pytest.approx(0.75)
    assert result["oracle"]["quality"] == pytest.approx(0.75)
    assert result["oracle"]["cost_per_1k_usd"] == pytest.approx((1 + 2 + 10 + 1) / 4)


def test_random_baseline_matches_requested_cost() -> None:
    table = RoutingTable.from_items(ROWS)

    random = baselines(table, matched_cost_per_1k_usd=5.5)["random_same_cost"]

    assert random["cost_per_1k_usd"] == pytest.approx(5.5)
    assert random["complex_share"] == pytest.approx(0.5)
    assert random["quality"] == pytest.approx(0.5)


def test_calibrate_finds_cheapest_policy_reaching_target() -> None:
    table = RoutingTable.from_items(ROWS)
    # A perfect model: each easy question's probability points at its oracle tier.
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]]
    )

    policy = calibrate(table, probabilities, quality_fraction=1.0)
    choices = [
        policy.decide(dict(zip(("simple", "medium", "complex"), row, strict=True)))
        for row in probabilities.tolist()
    ]

    assert choices == ["simple", "medium", "complex", "simple"]
    assert policy.target["calibration_quality"] == pytest.approx(0.75)
    assert policy.target["calibration_cost_per_1k_usd"] == pytest.approx(3.5)


def test_calibrate_without_routable_rows_is_rejected() -> None:
    empty = RoutingTable.from_items([])

    with pytest.raises(ValueError, match="calibration needs questions"):
        calibrate(empty, np.zeros((0, 3)))


def test_calibrate_returns_policy_usable_by_classifier() -> None:
    table = RoutingTable.from_items(ROWS)
    probabilities = np.full((4, 3), 1 / 3)

    policy = calibrate(table, probabilities, quality_fraction=1.0)

    assert isinstance(policy, DecisionPolicy)
    assert policy.complex_threshold is not None
    assert policy.medium_threshold is not None


def test_calibrate_unreachable_target_uses_most_probable_tier() -> None:
    table = RoutingTable.from_items(ROWS)
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]]
    )

    # No policy can beat always-complex quality by half again.
    policy = calibrate(table, probabilities, quality_fraction=1.5)

    assert policy.complex_threshold is None
    assert policy.medium_threshold is None
    assert policy.target["reached"] is False
    assert policy.decide({"simple": 0.1, "medium": 0.8, "complex": 0.1}) == "medium"
