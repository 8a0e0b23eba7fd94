"""Tests that a Store after a semantic miss reuses the miss's embedding."""

from __future__ import annotations

import numpy as np

from cache_service.cache import MISS_VECTORS_KEPT, SemanticCache
from cache_service.entries import HitLayer, LookupQuery, StoreCommand
from cache_service.scope import Scope
from cache_service.testing import FakeEmbedder

ACME = Scope(tenant="acme")


def _lookup(cache: SemanticCache, query: str):  # type: ignore[no-untyped-def]
    return cache.lookup(LookupQuery(query=query, scope=ACME))


def _store(cache: SemanticCache, query: str) -> None:
    outcome = cache.store(
        StoreCommand(query=query, scope=ACME, answer="an answer", finish_reason="stop")
    )
    assert outcome.stored, outcome.reason


def test_store_after_miss_embeds_once(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder
) -> None:
    assert not _lookup(fake_cache, "What is DNS?").hit
    calls_after_lookup = fake_embedder.embed_calls

    _store(fake_cache, "What is DNS?")

    assert calls_after_lookup == 1
    assert fake_embedder.embed_calls == 1


def test_store_without_lookup_embeds(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder
) -> None:
    _store(fake_cache, "What is DNS?")

    assert fake_embedder.embed_calls == 1


def test_reused_vector_serves_semantic_hits(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.set_similar("Explain DNS", "What is DNS?", 0.9)
    _lookup(fake_cache, "What is DNS?")
    _store(fake_cache, "What is DNS?")

    outcome = _lookup(fake_cache, "Explain DNS")

    assert outcome.hit
    assert outcome.layer is HitLayer.SEMANTIC
    assert np.isclose(outcome.similarity, 0.9, atol=1e-4)


def test_vector_is_used_by_one_store_only(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder
) -> None:
    _lookup(fake_cache, "What is DNS?")
    _store(fake_cache, "What is DNS?")

    _store(fake_cache, "What is DNS?")

    assert fake_embedder.embed_calls == 2


def test_oldest_miss_vector_is_dropped(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder
) -> None:
    for number in range(MISS_VECTORS_KEPT + 1):
        _lookup(fake_cache, f"question {number}")
    calls = fake_embedder.embed_calls

    _store(fake_cache, "question 0")
    _store(fake_cache, f"question {MISS_VECTORS_KEPT}")

    assert calls == MISS_VECTORS_KEPT + 1
    assert fake_embedder.embed_calls == calls + 1
