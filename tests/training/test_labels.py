"""Tier label derivation from model outcomes and MATH levels."""

from __future__ import annotations

import pytest

from training.labels import derive_tier, math_level_tier


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        pytest.param(
            {"simple": True, "medium": True, "complex": True}, "simple", id="all-right"
        ),
        pytest.param(
            {"simple": True, "medium": False, "complex": False},
            "simple",
            id="only-cheap-right",
        ),
        pytest.param(
            {"simple": False, "medium": True, "complex": True}, "medium", id="mid-right"
        ),
        pytest.param(
            {"simple": False, "medium": False, "complex": True},
            "complex",
            id="only-strong-right",
        ),
        pytest.param(
            {"simple": False, "medium": False, "complex": False},
            "complex",
            id="nobody-right",
        ),
        pytest.param({"medium": True, "complex": False}, "medium", id="routellm-mid"),
        pytest.param(
            {"medium": False, "complex": True}, "complex", id="routellm-strong"
        ),
        pytest.param(
            {"medium": False, "complex": False}, "complex", id="routellm-nobody"
        ),
        pytest.param(
            {"simple": None, "medium": True, "complex": None},
            "medium",
            id="blank-cells-skipped",
        ),
        pytest.param(
            {"simple": False, "medium": None, "complex": None},
            "complex",
            id="only-known-outcome-wrong",
        ),
    ],
)
def test_derive_tier_picks_cheapest_correct_tier(
    outcomes: dict[str, bool | None], expected: str
) -> None:
    assert derive_tier(outcomes) == expected


def test_derive_tier_without_outcomes_gives_no_label() -> None:
    assert derive_tier({}) is None
    assert derive_tier({"simple": None, "medium": None, "complex": None}) is None


def test_derive_tier_rejects_unknown_tier_name() -> None:
    with pytest.raises(ValueError, match=r"tier names .* got \['gpt-4'\]"):
        derive_tier({"gpt-4": True})


@pytest.mark.parametrize(
    ("level", "expected"),
    [(1, "medium"), (2, "medium"), (3, "complex"), (4, "complex"), (5, "complex")],
)
def test_math_level_maps_to_tier(level: int, expected: str) -> None:
    assert math_level_tier(level) == expected


def test_math_level_missing_gives_no_label() -> None:
    assert math_level_tier(None) is None


@pytest.mark.parametrize("level", [0, 6, -1])
def test_math_level_out_of_range_is_rejected(level: int) -> None:
    with pytest.raises(ValueError, match="MATH level must be 1-5"):
        math_level_tier(level)
