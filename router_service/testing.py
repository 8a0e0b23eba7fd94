"""Helpers for tests of the router: settings builders and in-memory fakes.

The fakes are for unit tests only; end-to-end tests use the real cache
service, the real classifier and real model servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from router_service.domain import CacheHit, CacheScope, FeedbackRating
from router_service.errors import CacheUnavailableError, NotFoundError
from router_service.settings import (
    TIERS,
    ModelSettings,
    ResilienceSettings,
    RouterSettings,
)

# Prices of the three test models, per 1000 tokens (input, output).
TEST_PRICES = {
    "simple": (0.0001, 0.0002),
    "medium": (0.001, 0.002),
    "complex": (0.01, 0.02),
}


def model_for_tests(name: str, **overrides: Any) -> ModelSettings:
    """Return a simulator model named `name`, with `overrides` applied."""
    values: dict[str, Any] = {
        "backend": "simulator",
        "model": f"sim-{name}",
        "input_price_per_1k": 0.001,
        "output_price_per_1k": 0.002,
        "context_window": 4096,
        "timeout_s": 5.0,
        "output_tokens": 8,
    }
    values.update(overrides)
    return ModelSettings(name=name, **values)


def settings_for_tests(
    models: Mapping[str, ModelSettings] | None = None,
    tiers: Mapping[str, tuple[str, ...]] | None = None,
    **overrides: Any,
) -> RouterSettings:
    """Return router settings on 127.0.0.1:0 with one simulator model per tier.

    Retries back off for at most 10 ms so that tests of retries stay fast.
    """
    if models is None:
        models = {
            f"{tier}-model": model_for_tests(
                f"{tier}-model",
                input_price_per_1k=TEST_PRICES[tier][0],
                output_price_per_1k=TEST_PRICES[tier][1],
            )
            for tier in TIERS
        }
    if tiers is None:
        tiers = {tier: (f"{tier}-model",) for tier in TIERS}
    base = RouterSettings(
        tiers=tiers,
        models=models,
        address="127.0.0.1:0",
        resilience=ResilienceSettings(backoff_initial_s=0.001, backoff_max_s=0.01),
    )
    return replace(base, **overrides)


@dataclass(frozen=True)
class FixedPrediction:
    """A prediction with all probability on one tier."""

    tier: str

    @property
    def probabilities(self) -> Mapping[str, float]:
        return {tier: 1.0 if tier == self.tier else 0.0 for tier in TIERS}


@dataclass
class FakeClassifier:
    """Classifies by keyword: "prove" -> complex, "explain" -> medium, else simple."""

    version: str = "fake-1"
    calls: int = 0

    def predict(self, query: str) -> FixedPrediction:
        self.calls += 1
        text = query.lower()
        if "prove" in text:
            return FixedPrediction("complex")
        if "explain" in text:
            return FixedPrediction("medium")
        return FixedPrediction("simple")


@dataclass
class FakeCache:
    """An exact-match in-memory cache keyed by (query, scope).

    Set `available` to False to make every call raise `CacheUnavailableError`.
    `similar` maps a query to another stored query that it matches semantically
    with the given similarity.
    """

    available: bool = True
    entries: dict[tuple[str, CacheScope], CacheHit] = field(default_factory=dict)
    similar: dict[str, tuple[str, float]] = field(default_factory=dict)
    lookups: list[tuple[str, CacheScope, float | None]] = field(default_factory=list)
    stores: list[tuple[str, CacheScope, str, str]] = field(default_factory=list)
    marks: list[tuple[str, str, FeedbackRating]] = field(default_factory=list)
    lookup_delay_s: float = 0.0

    async def lookup(
        self, query: str, scope: CacheScope, min_similarity: float | None = None
    ) -> CacheHit | None:
        self.lookups.append((query, scope, min_similarity))
        await asyncio.sleep(self.lookup_delay_s)
        if not self.available:
            raise CacheUnavailableError("fake cache is down")
        if (query, scope) in self.entries:
            return self.entries[(query, scope)]
        if query in self.similar:
            other, similarity = self.similar[query]
            entry = self.entries.get((other, scope))
            threshold = 0.85 if min_similarity is None else min_similarity
            if entry is not None and similarity >= threshold:
                return replace(entry, layer="semantic", similarity=similarity)
        return None

    async def store(
        self,
        query: str,
        scope: CacheScope,
        answer: str,
        metadata: Mapping[str, str],
        finish_reason: str,
    ) -> str | None:
        if not self.available:
            raise CacheUnavailableError("fake cache is down")
        entry_id = f"entry-{len(self.stores) + 1}"
        self.stores.append((query, scope, answer, finish_reason))
        self.entries[(query, scope)] = CacheHit(
            layer="exact",
            similarity=1.0,
            entry_id=entry_id,
            answer=answer,
            metadata=dict(metadata),
        )
        return entry_id

    async def feedback(
        self, entry_id: str, tenant: str, rating: FeedbackRating
    ) -> bool:
        if not self.available:
            raise CacheUnavailableError("fake cache is down")
        key = next(
            (
                key
                for key, hit in self.entries.items()
                if hit.entry_id == entry_id and key[1].tenant == tenant
            ),
            None,
        )
        if key is None:
            raise NotFoundError(f"cache_entry_id {entry_id!r} not found")
        self.marks.append((entry_id, tenant, rating))
        if rating is FeedbackRating.BAD:
            del self.entries[key]
            return True
        return False
