"""Routing quality, cost, baselines and threshold calibration on small tables."""

from __future__ import annotations

import numpy as np
import pytest

from router_service.classifier import DecisionPolicy
from training.datasets import LabelledQuery
from training.routing import (
    MAX_COST_TARGET,
    MIN_QUALITY_TARGET,
    CalibrationTarget,
    RoutingTable,
    baselines,
    calibrate,
    decide_all,
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


def test_random_baseline_mixes_neighbouring_tiers() -> None:
    table = RoutingTable.from_items(ROWS)

    # Costs per 1k: simple 1, medium 2, complex 10; 5.5 lies between medium
    # and complex, so complex gets (5.5 - 2) / 8 of the traffic.
    random = baselines(table, matched_cost_per_1k_usd=5.5)["random_same_cost"]

    assert random["cost_per_1k_usd"] == pytest.approx(5.5)
    assert random["tier_share"]["simple"] == 0.0
    assert random["tier_share"]["complex"] == pytest.approx(3.5 / 8)
    assert random["quality"] == pytest.approx(0.5 + 3.5 / 8 * 0.25)


def test_random_baseline_clips_cost_to_fixed_tiers() -> None:
    table = RoutingTable.from_items(ROWS)

    cheap = baselines(table, matched_cost_per_1k_usd=0.1)["random_same_cost"]

    assert cheap["cost_per_1k_usd"] == pytest.approx(1.0)
    assert cheap["tier_share"]["simple"] == 1.0


# A perfect model: each row's probability points at its oracle tier.
PERFECT = np.array(
    [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]]
)


def _choices(policy: DecisionPolicy, probabilities: np.ndarray) -> list[str]:
    return [
        policy.decide(dict(zip(("simple", "medium", "complex"), row, strict=True)))
        for row in probabilities.tolist()
    ]


def test_calibrate_quality_target_finds_cheapest_policy() -> None:
    table = RoutingTable.from_items(ROWS)
    target = CalibrationTarget(MIN_QUALITY_TARGET, 1.0)

    policy = calibrate(table, PERFECT, target)

    assert _choices(policy, PERFECT) == ["simple", "medium", "complex", "simple"]
    assert policy.target["reached"] is True
    assert policy.target["calibration_quality"] == pytest.approx(0.75)
    assert policy.target["calibration_cost_per_1k_usd"] == pytest.approx(3.5)


def test_calibrate_cost_target_finds_best_quality_under_cost() -> None:
    table = RoutingTable.from_items(ROWS)
    # 3.5 USD per 1k affords the oracle's choices; 3.4 does not afford complex.
    rich = calibrate(table, PERFECT, CalibrationTarget(MAX_COST_TARGET, 3.5))
    poor = calibrate(table, PERFECT, CalibrationTarget(MAX_COST_TARGET, 3.4))

    assert _choices(rich, PERFECT) == ["simple", "medium", "complex", "simple"]
    assert rich.target["reached"] is True
    assert rich.target["limit"] == 3.5
    assert rich.target["calibration_quality"] == pytest.approx(0.75)
    assert "complex" not in _choices(poor, PERFECT)
    assert poor.target["calibration_quality"] == pytest.approx(0.5)
    assert poor.target["calibration_cost_per_1k_usd"] <= 3.4


def test_calibrate_defaults_to_always_medium_cost() -> None:
    table = RoutingTable.from_items(ROWS)

    policy = calibrate(table, PERFECT)

    # The always-medium cost is 2 per 1k; the best policy under it pays
    # 1.25 for questions 0-3 routed simple, medium, simple, simple.
    assert policy.target["kind"] == MAX_COST_TARGET
    assert policy.target["value"] is None
    assert policy.target["limit"] == pytest.approx(2.0)
    assert policy.target["calibration_quality"] == pytest.approx(0.5)
    assert policy.target["calibration_cost_per_1k_usd"] <= 2.0


def test_calibrate_unreachable_cost_keeps_cheapest_policy() -> None:
    table = RoutingTable.from_items(ROWS)

    policy = calibrate(table, PERFECT, CalibrationTarget(MAX_COST_TARGET, 0.5))

    assert policy.target["reached"] is False
    assert _choices(policy, PERFECT) == ["simple"] * 4


def test_calibrate_without_routable_rows_is_rejected() -> None:
    empty = RoutingTable.from_items([])

    with pytest.raises(ValueError, match="calibration needs questions"):
        calibrate(empty, np.zeros((0, 3)))


def test_calibrate_returns_policy_usable_by_classifier() -> None:
    table = RoutingTable.from_items(ROWS)
    probabilities = np.full((4, 3), 1 / 3)

    policy = calibrate(table, probabilities, CalibrationTarget(MIN_QUALITY_TARGET, 1.0))

    assert isinstance(policy, DecisionPolicy)
    assert policy.complex_threshold is not None
    assert policy.medium_threshold is not None


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        pytest.param(MIN_QUALITY_TARGET, 1.5, r"in \(0, 1\]; got 1.5", id="high"),
        pytest.param(MIN_QUALITY_TARGET, None, "got None", id="missing"),
        pytest.param(MAX_COST_TARGET, -1.0, "0 or more USD; got -1.0", id="negative"),
        pytest.param("cheapest", 1.0, "kind must be", id="kind"),
    ],
)
def test_calibration_target_rejects_bad_values(
    kind: str, value: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CalibrationTarget(kind, value)


def test_decide_all_matches_policy_decide() -> None:
    rng = np.random.default_rng(11)
    probabilities = rng.dirichlet([1.0, 1.0, 1.0], size=300)
    policies = [
        DecisionPolicy(),
        DecisionPolicy(min_confidence=0.5),
        DecisionPolicy(0.3, 0.6),
        DecisionPolicy(0.0, 0.0),
        DecisionPolicy(1.0, 0.0, 0.6),
    ]

    for policy in policies:
        expected = [
            ("simple", "medium", "complex").index(tier)
            for tier in _choices(policy, probabilities)
        ]
        assert decide_all(probabilities, policy).tolist() == expected


def test_calibrate_ties_prefer_highest_complex_threshold() -> None:
    table = RoutingTable.from_items(ROWS)
    # No row has P(complex) above 0.1, so every complex threshold above 0.1
    # gives the same choices on these rows.
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.9, 0.05, 0.05]]
    )

    policy = calibrate(table, probabilities, CalibrationTarget(MAX_COST_TARGET, 2.0))

    assert policy.complex_threshold == 1.0
    assert "complex" not in _choices(policy, probabilities)
