"""Tests of the routing domain with fake cache, fake classifier and simulators."""

from __future__ import annotations

from dataclasses import replace

import pytest

from router_service.accounting import cost_usd
from router_service.backends import SimulatedBackend, build_backend
from router_service.domain import CacheStatus, RouteQuery
from router_service.errors import (
    InvalidRequestError,
    NoModelAvailableError,
    NotReadyError,
    PromptTooLargeError,
)
from router_service.routing import Router, fallback_chain
from router_service.settings import RouterSettings
from router_service.testing import (
    TEST_PRICES,
    FakeCache,
    FakeClassifier,
    model_for_tests,
    settings_for_tests,
)

pytestmark = pytest.mark.anyio


def make_router(
    settings: RouterSettings | None = None, cache: FakeCache | None = None
) -> tuple[Router, FakeCache, dict[str, SimulatedBackend]]:
    settings = settings or settings_for_tests()
    cache = cache if cache is not None else FakeCache()
    backends = {name: build_backend(m) for name, m in settings.models.items()}
    router = Router(settings, backends, cache)
    router.attach_classifier(FakeClassifier())
    return router, cache, backends  # type: ignore[return-value]


def query(text: str = "What is the capital of France?", **fields: object) -> RouteQuery:
    return replace(RouteQuery(query=text, tenant="acme"), **fields)  # type: ignore[arg-type]


async def test_miss_calls_classified_tier_and_stores() -> None:
    router, cache, backends = make_router()
    result = await router.route(query("Please explain photosynthesis"))

    assert result.cache_status is CacheStatus.MISS
    assert result.tier == "medium"
    assert result.model == "medium-model"
    assert "simulated" in result.answer
    assert backends["medium-model"].calls == 1
    assert len(cache.stores) == 1
    assert cache.stores[0][1].model == "auto"
    assert result.cache_entry_id == "entry-1"


async def test_miss_reports_cost_and_baseline() -> None:
    router, _, _ = make_router()
    result = await router.route(query())

    simple_in, simple_out = TEST_PRICES["simple"]
    complex_in, complex_out = TEST_PRICES["complex"]
    tokens_in, tokens_out = result.input_tokens, result.output_tokens
    assert tokens_in > 0
    assert tokens_out == 8
    assert result.cost_usd == pytest.approx(
        (tokens_in * simple_in + tokens_out * simple_out) / 1000
    )
    assert result.baseline_cost_usd == pytest.approx(
        (tokens_in * complex_in + tokens_out * complex_out) / 1000
    )


async def test_hit_returns_without_calling_model() -> None:
    router, _, backends = make_router()
    first = await router.route(query())
    second = await router.route(query())

    assert second.cache_status is CacheStatus.EXACT_HIT
    assert second.answer == first.answer
    assert second.cost_usd == 0.0
    assert second.input_tokens == 0
    assert second.model == "simple-model"
    assert second.tier == "simple"
    assert backends["simple-model"].calls == 1


async def test_hit_baseline_uses_stored_token_counts() -> None:
    router, _, _ = make_router()
    first = await router.route(query())
    second = await router.route(query())

    assert second.baseline_cost_usd == pytest.approx(first.baseline_cost_usd)
    assert second.baseline_cost_usd > 0


async def test_semantic_hit_reports_similarity() -> None:
    cache = FakeCache(
        similar={"Capital city of France?": ("What is the capital of France?", 0.93)}
    )
    router, _, _ = make_router(cache=cache)
    await router.route(query())
    result = await router.route(query("Capital city of France?"))

    assert result.cache_status is CacheStatus.SEMANTIC_HIT
    assert result.similarity == pytest.approx(0.93)


async def test_pinned_tier_scopes_cache_by_tier() -> None:
    router, cache, backends = make_router()
    result = await router.route(query(tier="complex"))

    assert result.tier == "complex"
    assert backends["complex-model"].calls == 1
    assert cache.lookups[0][1].model == "complex"


async def test_scope_carries_tenant_prompt_and_parameters() -> None:
    router, cache, _ = make_router()
    await router.route(
        query(system_prompt="Be brief.", temperature=0.5, max_tokens=20, user="u1")
    )
    scope = cache.lookups[0][1]

    assert scope.tenant == "acme"
    assert scope.system_prompt == "Be brief."
    assert scope.temperature == 0.5
    assert scope.max_tokens == 20


async def test_cache_down_still_answers_uncached() -> None:
    router, cache, _ = make_router(cache=FakeCache(available=False))
    result = await router.route(query())

    assert result.cache_status is CacheStatus.UNAVAILABLE
    assert "simulated" in result.answer
    assert cache.stores == []


async def test_skip_cache_bypasses_lookup_and_store() -> None:
    router, cache, _ = make_router()
    result = await router.route(query(skip_cache=True))

    assert result.cache_status is CacheStatus.BYPASSED
    assert cache.lookups == []
    assert cache.stores == []


async def test_length_cut_answer_is_not_stored() -> None:
    router, cache, _ = make_router()
    result = await router.route(query(max_tokens=3))

    assert result.finish_reason == "length"
    assert cache.stores == []


async def test_unpinned_route_needs_classifier() -> None:
    settings = settings_for_tests()
    backends = {name: build_backend(m) for name, m in settings.models.items()}
    router = Router(settings, backends, FakeCache())

    with pytest.raises(NotReadyError, match="still loading"):
        await router.route(query())
    pinned = await router.route(query(tier="simple"))
    assert pinned.tier == "simple"


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"query": "   "}, "query"),
        ({"query": "x" * 20_000}, "query"),
        ({"tenant": ""}, "tenant"),
        ({"tenant": "t" * 200}, "tenant"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"tier": "huge"}, "tier"),
    ],
    ids=lambda value: str(value)[:30],
)
async def test_invalid_request_names_field(
    fields: dict[str, object], field_name: str
) -> None:
    router, cache, _ = make_router()
    with pytest.raises(InvalidRequestError) as caught:
        await router.route(query(**fields))

    assert caught.value.field == field_name
    assert cache.lookups == []


async def test_conversation_role_is_checked() -> None:
    from router_service.backends import ChatMessage

    router, _, _ = make_router()
    with pytest.raises(InvalidRequestError, match=r"conversation\[0\]\.role"):
        await router.route(query(conversation=(ChatMessage("system", "hi"),)))


def test_fallback_chain_walks_up_tiers_without_repeats() -> None:
    models = {name: model_for_tests(name) for name in ("a", "b", "c")}
    settings = settings_for_tests(
        models=models,
        tiers={"simple": ("a", "b"), "medium": ("b",), "complex": ("c", "a")},
    )

    assert fallback_chain(settings, "simple") == [
        ("simple", "a"),
        ("simple", "b"),
        ("complex", "c"),
    ]
    assert fallback_chain(settings, "complex") == [("complex", "c"), ("complex", "a")]


async def test_failed_primary_falls_back_to_next_model() -> None:
    models = {
        "broken": model_for_tests("broken", failure_rate=1.0),
        "spare": model_for_tests("spare"),
        "big": model_for_tests("big"),
    }
    settings = settings_for_tests(
        models=models,
        tiers={
            "simple": ("broken", "spare"),
            "medium": ("spare",),
            "complex": ("big",),
        },
    )
    router, _, backends = make_router(settings)
    result = await router.route(query())

    assert result.model == "spare"
    assert result.tier == "simple"
    assert backends["broken"].calls == settings.resilience.max_attempts


async def test_all_models_down_serves_degraded_cache_answer() -> None:
    models = {name: model_for_tests(name, failure_rate=1.0) for name in ("s", "m", "c")}
    settings = settings_for_tests(
        models=models, tiers={"simple": ("s",), "medium": ("m",), "complex": ("c",)}
    )
    cache = FakeCache(
        similar={"Capital of France??": ("What is the capital of France?", 0.75)}
    )
    router, _, _ = make_router(settings, cache)
    stored = await make_router(cache=cache)[0].route(query())
    result = await router.route(query("Capital of France??"))

    assert result.degraded
    assert result.cache_status is CacheStatus.SEMANTIC_HIT
    assert result.answer == stored.answer
    assert cache.lookups[-1][2] == settings.cache.degraded_min_similarity


async def test_all_models_down_without_cache_entry_is_unavailable() -> None:
    models = {name: model_for_tests(name, failure_rate=1.0) for name in ("s", "m", "c")}
    settings = settings_for_tests(
        models=models, tiers={"simple": ("s",), "medium": ("m",), "complex": ("c",)}
    )
    router, _, backends = make_router(settings)

    with pytest.raises(NoModelAvailableError, match="every model failed"):
        await router.route(query())
    assert all(b.calls == settings.resilience.max_attempts for b in backends.values())


async def test_prompt_too_large_for_every_model_is_invalid() -> None:
    models = {
        name: model_for_tests(name, context_window=50) for name in ("s", "m", "c")
    }
    settings = settings_for_tests(
        models=models, tiers={"simple": ("s",), "medium": ("m",), "complex": ("c",)}
    )
    router, _, _ = make_router(settings)

    with pytest.raises(PromptTooLargeError, match="context window"):
        await router.route(query("word " * 100))


async def test_prompt_too_large_routes_to_model_that_fits() -> None:
    models = {
        "small": model_for_tests("small", context_window=50),
        "m": model_for_tests("m", context_window=50),
        "large": model_for_tests("large", context_window=10_000),
    }
    settings = settings_for_tests(
        models=models,
        tiers={"simple": ("small",), "medium": ("m",), "complex": ("large",)},
    )
    router, _, _ = make_router(settings)
    result = await router.route(query("word " * 100))

    assert result.model == "large"
    assert result.tier == "complex"


def test_cost_is_list_price_per_thousand_tokens() -> None:
    model = model_for_tests("m", input_price_per_1k=0.5, output_price_per_1k=1.5)

    assert cost_usd(model, 2000, 1000) == pytest.approx(2.5)


def test_classify_rejects_blank_query() -> None:
    router, _, _ = make_router()
    with pytest.raises(InvalidRequestError, match="query"):
        router.classify(" ")


async def test_passed_deadline_is_deadline_exceeded() -> None:
    import time

    from router_service.errors import DeadlineExceededError

    router, _, backends = make_router()
    with pytest.raises(DeadlineExceededError, match="longer deadline"):
        await router.route(query(), deadline=time.monotonic() - 1.0)
    assert backends["simple-model"].calls == 0


def test_prompt_estimate_rounds_up_per_message() -> None:
    from router_service.backends import ChatMessage
    from router_service.backends.base import estimate_prompt_tokens

    messages = (ChatMessage("system", "x" * 7), ChatMessage("user", "y" * 9))

    assert estimate_prompt_tokens(messages) == (3 + 4) + (3 + 4)
