"""Unit tests of SemanticCache on the fake embedder and a manual clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cache_service.cache import SemanticCache
from cache_service.entries import HitLayer, LookupQuery, StoreCommand
from cache_service.errors import InvalidRequestError
from cache_service.scope import ChatTurn, Scope
from cache_service.testing import FakeEmbedder, ManualClock, settings_for_tests

ACME = Scope(tenant="acme")
GLOBEX = Scope(tenant="globex")


def _store(
    cache: SemanticCache, query: str, answer: str = "an answer", scope: Scope = ACME
) -> int:
    outcome = cache.store(
        StoreCommand(query=query, scope=scope, answer=answer, finish_reason="stop")
    )
    assert outcome.stored, outcome.reason
    assert outcome.entry_id is not None
    return outcome.entry_id


def _lookup(cache: SemanticCache, query: str, scope: Scope = ACME, **kwargs: float):
    return cache.lookup(LookupQuery(query=query, scope=scope, **kwargs))


def test_exact_hit_needs_no_embedding(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder
) -> None:
    _store(fake_cache, "What is DNS?", "Domain Name System")
    calls_after_store = fake_embedder.embed_calls

    outcome = _lookup(fake_cache, "  what is DNS ")

    assert outcome.hit
    assert outcome.layer is HitLayer.EXACT
    assert outcome.similarity == 1.0
    assert outcome.entry is not None
    assert outcome.entry.answer == "Domain Name System"
    assert fake_embedder.embed_calls == calls_after_store


def test_semantic_hit_at_threshold(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.set_similar("paraphrase", "original", 0.86)
    _store(fake_cache, "original", "stored answer")

    outcome = _lookup(fake_cache, "paraphrase")

    assert outcome.hit
    assert outcome.layer is HitLayer.SEMANTIC
    assert outcome.similarity == pytest.approx(0.86, abs=1e-4)
    assert outcome.entry is not None
    assert outcome.entry.answer == "stored answer"


def test_semantic_miss_below_threshold_reports_similarity(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.set_similar("related", "original", 0.84)
    _store(fake_cache, "original")

    outcome = _lookup(fake_cache, "related")

    assert not outcome.hit
    assert outcome.entry is None
    assert outcome.similarity == pytest.approx(0.84, abs=1e-4)


def test_lookup_threshold_override_applies(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.set_similar("related", "original", 0.84)
    _store(fake_cache, "original")

    assert _lookup(fake_cache, "related", min_similarity=0.8).hit
    assert not _lookup(fake_cache, "related", min_similarity=0.95).hit


def test_unrelated_query_misses(fake_cache: SemanticCache) -> None:
    _store(fake_cache, "How do I bake bread?")
    outcome = _lookup(fake_cache, "What is the capital of Peru?")
    assert not outcome.hit
    assert outcome.similarity < 0.85


def test_tenant_never_sees_other_tenant_entry(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.set_similar("paraphrase", "original", 0.99)
    _store(fake_cache, "original", "acme secret", scope=ACME)

    exact = _lookup(fake_cache, "original", scope=GLOBEX)
    semantic = _lookup(fake_cache, "paraphrase", scope=GLOBEX)

    assert not exact.hit
    assert not semantic.hit
    assert semantic.similarity == 0.0


@pytest.mark.parametrize(
    "other_scope",
    [
        pytest.param(replace(ACME, model="complex"), id="model"),
        pytest.param(replace(ACME, system_prompt="Answer in French."), id="system"),
        pytest.param(
            replace(ACME, conversation=(ChatTurn("user", "Write a loop in Go"),)),
            id="conversation",
        ),
        pytest.param(replace(ACME, temperature=0.9), id="temperature"),
        pytest.param(replace(ACME, max_tokens=16), id="max-tokens"),
    ],
)
def test_other_scope_misses(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder, other_scope: Scope
) -> None:
    fake_embedder.set_similar("and how about Rust?", "and in Rust?", 0.99)
    _store(fake_cache, "and in Rust?", scope=ACME)

    assert not _lookup(fake_cache, "and in Rust?", scope=other_scope).hit
    assert not _lookup(fake_cache, "and how about Rust?", scope=other_scope).hit
    assert _lookup(fake_cache, "and how about Rust?", scope=ACME).hit


def test_semantic_ttl_ends_before_exact_ttl(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    fake_embedder.set_similar("paraphrase", "original", 0.95)
    _store(fake_cache, "original")

    clock.advance(1799)
    assert _lookup(fake_cache, "paraphrase").hit
    clock.advance(2)
    assert not _lookup(fake_cache, "paraphrase").hit
    assert _lookup(fake_cache, "original").layer is HitLayer.EXACT
    clock.advance(3600 - 1801)
    assert not _lookup(fake_cache, "original").hit


def test_sweep_removes_expired_entries_and_vectors(
    fake_cache: SemanticCache, clock: ManualClock
) -> None:
    _store(fake_cache, "old question")
    clock.advance(2000)
    _store(fake_cache, "new question")

    assert fake_cache.sweep_expired() == 0
    stats = fake_cache.stats()
    assert stats.entries == 2
    assert stats.index_vectors == 1

    clock.advance(1700)
    assert fake_cache.sweep_expired() == 1
    stats = fake_cache.stats()
    assert stats.entries == 1
    assert stats.expirations == 1
    assert stats.index_vectors == 1


def test_configured_ttls_apply(fake_embedder: FakeEmbedder, clock: ManualClock) -> None:
    settings = settings_for_tests(exact_ttl_s=10.0, semantic_ttl_s=5.0)
    cache = SemanticCache(settings, fake_embedder, clock=clock)
    fake_embedder.set_similar("paraphrase", "original", 0.95)
    _store(cache, "original")

    clock.advance(6)
    assert not _lookup(cache, "paraphrase").hit
    assert _lookup(cache, "original").hit
    clock.advance(5)
    assert not _lookup(cache, "original").hit


def test_store_replaces_entry_with_same_normalized_text(
    fake_cache: SemanticCache,
) -> None:
    first = _store(fake_cache, "What is DNS?", "old answer")
    second = _store(fake_cache, "what is dns", "new answer")

    outcome = _lookup(fake_cache, "What is DNS")

    assert second != first
    assert outcome.entry is not None
    assert outcome.entry.answer == "new answer"
    assert fake_cache.stats().entries == 1
    assert fake_cache.stats().index_vectors == 1


def test_least_recently_used_entry_is_evicted(
    fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    cache = SemanticCache(settings_for_tests(max_entries=2), fake_embedder, clock=clock)
    _store(cache, "first")
    _store(cache, "second")
    assert _lookup(cache, "first").hit

    _store(cache, "third")

    assert _lookup(cache, "first").hit
    assert not _lookup(cache, "second").hit
    assert _lookup(cache, "third").hit
    stats = cache.stats()
    assert stats.evictions == 1
    assert stats.entries == 2
    assert stats.index_vectors == 2


def test_evicted_entry_is_not_served_semantically(
    fake_embedder: FakeEmbedder, clock: ManualClock
) -> None:
    cache = SemanticCache(settings_for_tests(max_entries=1), fake_embedder, clock=clock)
    fake_embedder.set_similar("paraphrase", "original", 0.95)
    _store(cache, "original", "evicted answer")
    _store(cache, "something else", "kept answer")

    outcome = _lookup(cache, "paraphrase")

    assert not outcome.hit
    assert outcome.entry is None


@pytest.mark.parametrize(
    ("finish_reason", "answer", "reason"),
    [
        pytest.param("length", "cut off mid", "finish_reason is 'length'", id="length"),
        pytest.param("content_filter", "no", "'content_filter'", id="filtered"),
        pytest.param("", "partial", "finish_reason is ''", id="missing-reason"),
        pytest.param("error", "oops", "'error'", id="error"),
        pytest.param("stop", "   ", "the answer is empty", id="empty-answer"),
    ],
)
def test_unreplayable_answer_is_not_stored(
    fake_cache: SemanticCache, finish_reason: str, answer: str, reason: str
) -> None:
    outcome = fake_cache.store(
        StoreCommand(
            query="question", scope=ACME, answer=answer, finish_reason=finish_reason
        )
    )

    assert not outcome.stored
    assert reason in outcome.reason
    assert not _lookup(fake_cache, "question").hit
    assert fake_cache.stats().entries == 0


def test_invalidate_by_entry_id(fake_cache: SemanticCache) -> None:
    entry_id = _store(fake_cache, "question")
    assert fake_cache.invalidate_entry(entry_id) == 1
    assert fake_cache.invalidate_entry(entry_id) == 0
    assert not _lookup(fake_cache, "question").hit


def test_invalidate_entry_keeps_other_tenants_entry(
    fake_cache: SemanticCache,
) -> None:
    entry_id = _store(fake_cache, "question")

    from_globex = fake_cache.invalidate_entry(entry_id, "globex")
    missing_from_globex = fake_cache.invalidate_entry(entry_id + 1000, "globex")

    assert from_globex == 0
    assert missing_from_globex == 0
    assert _lookup(fake_cache, "question").hit
    assert fake_cache.consistency_problems() == []
    assert fake_cache.invalidate_entry(entry_id, "acme") == 1
    assert not _lookup(fake_cache, "question").hit


def test_invalidate_entry_without_tenant_removes_any(
    fake_cache: SemanticCache,
) -> None:
    entry_id = _store(fake_cache, "question", scope=GLOBEX)

    assert fake_cache.invalidate_entry(entry_id) == 1
    assert not _lookup(fake_cache, "question", scope=GLOBEX).hit


@pytest.mark.parametrize(
    ("tenant", "message"),
    [
        pytest.param("", "entry_tenant is required", id="empty"),
        pytest.param("acme\nforged", "entry_tenant must contain only", id="newline"),
    ],
)
def test_invalidate_entry_rejects_invalid_tenant(
    fake_cache: SemanticCache, tenant: str, message: str
) -> None:
    entry_id = _store(fake_cache, "question")

    with pytest.raises(InvalidRequestError, match=message):
        fake_cache.invalidate_entry(entry_id, tenant)
    assert _lookup(fake_cache, "question").hit


def test_invalidate_by_tenant_keeps_other_tenants(fake_cache: SemanticCache) -> None:
    _store(fake_cache, "one", scope=ACME)
    _store(fake_cache, "two", scope=replace(ACME, model="complex"))
    _store(fake_cache, "one", scope=GLOBEX)

    assert fake_cache.invalidate_tenant("acme") == 2

    assert not _lookup(fake_cache, "one", scope=ACME).hit
    assert _lookup(fake_cache, "one", scope=GLOBEX).hit
    assert fake_cache.stats().index_vectors == 1


def test_invalidate_by_query_matches_normalized_text(
    fake_cache: SemanticCache,
) -> None:
    _store(fake_cache, "What is DNS?")
    _store(fake_cache, "What is TCP?")

    assert fake_cache.invalidate_query("what is dns", ACME) == 1
    assert fake_cache.invalidate_query("what is dns", GLOBEX) == 0

    assert not _lookup(fake_cache, "What is DNS?").hit
    assert _lookup(fake_cache, "What is TCP?").hit


def test_long_query_uses_exact_layer_only(clock: ManualClock) -> None:
    embedder = FakeEmbedder(max_tokens=12)
    cache = SemanticCache(settings_for_tests(), embedder, clock=clock)
    shared_prefix = " ".join(["context"] * 20)
    first = f"{shared_prefix} then summarize part one"
    second = f"{shared_prefix} then summarize part two"
    # Pin identical vectors, as a model that truncates both to the prefix would.
    embedder.set_similar(second, first, 1.0)
    _store(cache, first, "summary of part one")

    assert _lookup(cache, first).layer is HitLayer.EXACT
    assert not _lookup(cache, second).hit
    assert embedder.embed_calls == 0
    assert cache.stats().index_vectors == 0


@pytest.mark.parametrize(
    ("query", "scope", "threshold", "message"),
    [
        pytest.param("", ACME, None, "query must contain a visible", id="empty"),
        pytest.param(
            " \n\t", ACME, None, "query must contain a visible", id="whitespace"
        ),
        pytest.param(
            "x" * 16_001,
            ACME,
            None,
            "query must be at most 16000 characters; got 16001",
            id="too-long",
        ),
        pytest.param(
            "q", Scope(tenant=""), None, "scope.tenant is required", id="tenant"
        ),
        pytest.param(
            "q", Scope(tenant="  "), None, "scope.tenant is required", id="blank-tenant"
        ),
        pytest.param("q", ACME, 0.0, r"min_similarity must be in \(0, 1\]", id="zero"),
        pytest.param("q", ACME, 1.01, r"got 1.01", id="above-one"),
        pytest.param(
            "q",
            replace(ACME, temperature=-1.0),
            None,
            "scope.params.temperature must be between 0 and 2; got -1.0",
            id="temperature",
        ),
        pytest.param(
            "q",
            replace(ACME, temperature=2.5),
            None,
            "scope.params.temperature must be between 0 and 2; got 2.5",
            id="temperature-above-two",
        ),
        pytest.param(
            "q",
            replace(ACME, max_tokens=0),
            None,
            "scope.params.max_tokens must be between 1 and 4096; got 0",
            id="max-tokens",
        ),
        pytest.param(
            "q",
            replace(ACME, max_tokens=4097),
            None,
            "scope.params.max_tokens must be between 1 and 4096; got 4097",
            id="max-tokens-above-limit",
        ),
        pytest.param(
            "q",
            replace(ACME, conversation=(ChatTurn("system", "be brief"),)),
            None,
            r"scope.conversation\[0\].role must be user or assistant; got 'system'",
            id="system-role",
        ),
        pytest.param(
            "q",
            replace(ACME, conversation=(ChatTurn("user", "hi"),) * 101),
            None,
            r"scope.conversation must have at most 100 turns "
            r"\(max_conversation_turns\); got 101",
            id="too-many-turns",
        ),
        pytest.param(
            "q",
            replace(ACME, conversation=(ChatTurn("user", "x" * 100_001),)),
            None,
            "scope.conversation must total at most 100000 characters",
            id="conversation-too-long",
        ),
        pytest.param(
            "q",
            replace(ACME, model="m" * 257),
            None,
            "scope.model must be at most 256 characters; got 257",
            id="model-too-long",
        ),
        pytest.param(
            "q",
            replace(ACME, system_prompt="s" * 32_001),
            None,
            r"scope.system_prompt must be at most 32000 characters "
            r"\(max_system_prompt_chars\); got 32001",
            id="system-prompt-too-long",
        ),
    ],
)
def test_invalid_lookup_names_field_and_rule(
    fake_cache: SemanticCache,
    query: str,
    scope: Scope,
    threshold: float | None,
    message: str,
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        fake_cache.lookup(
            LookupQuery(query=query, scope=scope, min_similarity=threshold)
        )


def test_oversized_answer_is_rejected(fake_cache: SemanticCache) -> None:
    command = StoreCommand(
        query="q", scope=ACME, answer="a" * 200_001, finish_reason="stop"
    )
    with pytest.raises(InvalidRequestError, match="answer must be at most 200000"):
        fake_cache.store(command)


def test_oversized_metadata_is_rejected(fake_cache: SemanticCache) -> None:
    command = StoreCommand(
        query="q",
        scope=ACME,
        answer="a",
        finish_reason="stop",
        metadata={"blob": "x" * 5000},
    )
    with pytest.raises(InvalidRequestError, match="metadata must total at most 4000"):
        fake_cache.store(command)


def test_stats_count_each_outcome(
    fake_cache: SemanticCache, fake_embedder: FakeEmbedder
) -> None:
    fake_embedder.set_similar("paraphrase", "original", 0.9)
    _store(fake_cache, "original")
    _lookup(fake_cache, "original")
    _lookup(fake_cache, "paraphrase")
    _lookup(fake_cache, "unrelated")

    stats = fake_cache.stats()
    assert stats.stores == 1
    assert stats.exact_hits == 1
    assert stats.semantic_hits == 1
    assert stats.misses == 1
