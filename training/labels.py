"""Tier labels: which tier a query needs, derived from which models answered it.

Every tier stands for one representative model, chosen from the three cost clusters
in RouterBench's per-call costs (mean USD per ARC-Challenge call, from the
routerbench_subset train split):

- simple: mistral-7b-chat, about $0.0001. WizardLM-13B ($0.00015) is in the same
  cluster.
- medium: Mixtral-8x7B, about $0.0003. Yi-34B, code-llama-34b, claude-instant,
  llama-2-70b and gpt-3.5-turbo ($0.0004-0.0005) are in the same cluster.
- complex: gpt-4-1106-preview, about $0.005. claude-v1 and claude-v2 ($0.004) are in
  the same cluster.

Mixtral-8x7B and gpt-4-1106-preview are also the two models whose outcomes RouteLLM
recorded for MMLU and GSM8K, so one model means one tier in every source.
"""

from __future__ import annotations

from collections.abc import Mapping

from router_service.classifier import TIERS


def derive_tier(correct_by_tier: Mapping[str, bool | None]) -> str | None:
    """Derive the tier label of one question from its tier models' outcomes.

    `correct_by_tier` maps a tier to True (its model answered correctly), False
    (it answered wrongly) or None (no outcome recorded). A missing tier counts as
    None. The rules, in order:

    1. The label is the cheapest tier whose model answered correctly. A tier with
       no recorded outcome is skipped, so RouteLLM rows, which never ran the simple
       model, are labelled medium at best.
    2. A question that no recorded model answered is labelled complex: it is at
       least as hard as the strongest tier observed, and the strongest model is the
       one most likely to answer it.
    3. A question with no recorded outcome at all has no label (None) and is
       dropped.

    Raises:
        ValueError: a key is not a tier name.
    """
    unknown = set(correct_by_tier) - set(TIERS)
    if unknown:
        raise ValueError(
            f"correct_by_tier keys must be tier names {TIERS}; got {sorted(unknown)}"
        )
    outcomes = [correct_by_tier.get(tier) for tier in TIERS]
    for tier, correct in zip(TIERS, outcomes, strict=True):
        if correct:
            return tier
    if all(correct is None for correct in outcomes):
        return None
    return "complex"


def math_level_tier(level: int | None) -> str | None:
    """Map a MATH competition difficulty level (1-5) to a tier.

    Levels 1-2 are medium and 3-5 complex. No level is simple, because even the
    easiest MATH problems are competition maths, harder than everyday questions.
    A missing level gives no label.

    Raises:
        ValueError: the level is outside 1-5.
    """
    if level is None:
        return None
    if not 1 <= level <= 5:
        raise ValueError(f"MATH level must be 1-5 or None; got {level!r}")
    return "medium" if level <= 2 else "complex"
