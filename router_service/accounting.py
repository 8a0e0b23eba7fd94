"""Token and cost accounting: list-price cost, the no-router baseline, results.

Costs use the list prices in the configuration; nothing here bills anyone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from router_service.backends.base import Completion
from router_service.domain import CacheHit, CacheStatus, RouteResult
from router_service.settings import TIERS, ModelSettings, RouterSettings


@dataclass(frozen=True)
class ModelAnswer:
    """A completion with the model and tier that produced it.

    The failed_* counts are tokens that failed attempts reported; they are
    billed on top of the successful call.
    """

    completion: Completion
    model: ModelSettings
    tier: str
    failed_input_tokens: int = 0
    failed_output_tokens: int = 0


def cost_usd(model: ModelSettings, input_tokens: int, output_tokens: int) -> float:
    """Return the list-price cost of a call in USD."""
    return (
        input_tokens * model.input_price_per_1k
        + output_tokens * model.output_price_per_1k
    ) / 1000.0


def baseline_cost_usd(
    settings: RouterSettings, input_tokens: int, output_tokens: int
) -> float:
    """Return the cost of the same tokens on the complex tier's primary model."""
    return cost_usd(settings.primary_model("complex"), input_tokens, output_tokens)


def _int_metadata(metadata: Mapping[str, str], key: str) -> int:
    try:
        return max(0, int(metadata.get(key, "0")))
    except ValueError:
        return 0


def result_from_hit(
    settings: RouterSettings,
    hit: CacheHit,
    status: CacheStatus,
    tier: str,
    request_id: str,
    latency_ms: float,
    *,
    degraded: bool = False,
) -> RouteResult:
    """Build the result of a request served from the cache.

    A hit costs nothing. Its baseline uses the token counts stored with the
    entry, because those are what the complex tier would have processed.
    """
    metadata = hit.metadata
    stored_tier = metadata.get("tier", tier)
    if degraded:
        status = (
            CacheStatus.EXACT_HIT if hit.layer == "exact" else CacheStatus.SEMANTIC_HIT
        )
    return RouteResult(
        answer=hit.answer,
        tier=stored_tier if stored_tier in TIERS else tier,
        model=metadata.get("model", ""),
        cache_status=status,
        similarity=hit.similarity,
        input_tokens=0,
        output_tokens=0,
        cost_usd=0.0,
        baseline_cost_usd=baseline_cost_usd(
            settings,
            _int_metadata(metadata, "input_tokens"),
            _int_metadata(metadata, "output_tokens"),
        ),
        latency_ms=latency_ms,
        request_id=request_id,
        finish_reason="stop",
        cache_entry_id=hit.entry_id,
        degraded=degraded,
    )


def result_from_shared(
    settings: RouterSettings,
    answer: ModelAnswer,
    entry_id: str,
    request_id: str,
    latency_ms: float,
) -> RouteResult:
    """Build the result of a request that reused a concurrent request's model call.

    It costs nothing, because the request that made the call is billed for it.
    As for a cache hit, the baseline is the shared call's tokens on the complex
    tier.
    """
    completion = answer.completion
    return RouteResult(
        answer=completion.text,
        tier=answer.tier,
        model=answer.model.name,
        cache_status=CacheStatus.SHARED,
        similarity=0.0,
        input_tokens=0,
        output_tokens=0,
        cost_usd=0.0,
        baseline_cost_usd=baseline_cost_usd(
            settings, completion.input_tokens, completion.output_tokens
        ),
        latency_ms=latency_ms,
        request_id=request_id,
        finish_reason=completion.finish_reason,
        cache_entry_id=entry_id,
    )


def result_from_answer(
    settings: RouterSettings,
    answer: ModelAnswer,
    status: CacheStatus,
    entry_id: str,
    request_id: str,
    latency_ms: float,
) -> RouteResult:
    """Build the result of a request that a model answered.

    The cost covers the successful call plus the tokens that failed attempts
    reported; the baseline covers only the successful call's tokens.
    """
    completion = answer.completion
    billed_input = completion.input_tokens + answer.failed_input_tokens
    billed_output = completion.output_tokens + answer.failed_output_tokens
    return RouteResult(
        answer=completion.text,
        tier=answer.tier,
        model=answer.model.name,
        cache_status=status,
        similarity=0.0,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cost_usd=cost_usd(answer.model, billed_input, billed_output),
        baseline_cost_usd=baseline_cost_usd(
            settings, completion.input_tokens, completion.output_tokens
        ),
        latency_ms=latency_ms,
        request_id=request_id,
        finish_reason=completion.finish_reason,
        cache_entry_id=entry_id,
    )
