"""Tests that a cache hit is answered without running the classifier."""

from __future__ import annotations

import pytest

from router_service.backends import build_backend
from router_service.domain import CacheHit, CacheStatus, RouteQuery
from router_service.routing import Router
from router_service.testing import FakeCache, FakeClassifier, settings_for_tests

pytestmark = pytest.mark.anyio

QUESTION = "Please explain photosynthesis"


def _router(cache: FakeCache) -> tuple[Router, FakeClassifier]:
    settings = settings_for_tests()
    backends = {name: build_backend(m) for name, m in settings.models.items()}
    router = Router(settings, backends, cache)
    classifier = FakeClassifier()
    router.attach_classifier(classifier)
    return router, classifier


def _hit(metadata: dict[str, str]) -> CacheHit:
    return CacheHit(
        layer="exact",
        similarity=1.0,
        entry_id="entry-1",
        answer="stored answer",
        metadata=metadata,
    )


async def test_hit_reports_stored_tier_without_classifier() -> None:
    cache = FakeCache()
    router, classifier = _router(cache)
    request = RouteQuery(query=QUESTION, tenant="acme")
    cache.entries[(QUESTION, request.cache_scope())] = _hit({"tier": "complex"})

    result = await router.route(request)

    assert result.cache_status is CacheStatus.EXACT_HIT
    assert result.tier == "complex"
    assert classifier.calls == 0


async def test_hit_without_stored_tier_is_classified() -> None:
    cache = FakeCache()
    router, classifier = _router(cache)
    request = RouteQuery(query=QUESTION, tenant="acme")
    cache.entries[(QUESTION, request.cache_scope())] = _hit({})

    result = await router.route(request)

    assert result.cache_status is CacheStatus.EXACT_HIT
    assert result.tier == "medium"
    assert classifier.calls == 1


async def test_miss_is_classified_once() -> None:
    router, classifier = _router(FakeCache())

    result = await router.route(RouteQuery(query=QUESTION, tenant="acme"))

    assert result.cache_status is CacheStatus.MISS
    assert result.tier == "medium"
    assert classifier.calls == 1


async def test_unavailable_cache_still_classifies() -> None:
    router, classifier = _router(FakeCache(available=False))

    result = await router.route(RouteQuery(query=QUESTION, tenant="acme"))

    assert result.cache_status is CacheStatus.UNAVAILABLE
    assert result.tier == "medium"
    assert classifier.calls == 1
