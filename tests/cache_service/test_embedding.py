"""Tests of the real all-MiniLM-L6-v2 embedder and the cache on it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cache_service.cache import SemanticCache
from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.entries import HitLayer, LookupQuery, StoreCommand
from cache_service.scope import Scope
from cache_service.testing import settings_for_tests

PARAPHRASES = [
    ("How do I reverse a list in Python?", "How can I reverse a Python list?"),
    ("Who wrote Hamlet?", "Who is the author of Hamlet?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    (
        "How can I improve my English speaking skills?",
        "How do I get better at speaking English?",
    ),
]
DIFFERENT_QUESTIONS = [
    ("How do I reverse a list in Python?", "How do I sort a list in Python?"),
    ("What is the capital of France?", "What is the capital of Germany?"),
    ("What causes rain?", "How do airplanes fly?"),
]
ACME = Scope(tenant="acme")


def _cosine(embedder: SentenceTransformerEmbedder, first: str, second: str) -> float:
    vectors = embedder.embed([first, second])
    return float(vectors[0] @ vectors[1])


def test_vectors_are_normalized_float32(
    real_embedder: SentenceTransformerEmbedder,
) -> None:
    vectors = real_embedder.embed(["What is DNS?", "Explain TCP handshakes"])
    assert real_embedder.dimension == 384
    assert real_embedder.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("first", "second"), PARAPHRASES)
def test_paraphrases_reach_threshold(
    real_embedder: SentenceTransformerEmbedder, first: str, second: str
) -> None:
    assert _cosine(real_embedder, first, second) >= 0.85


@pytest.mark.parametrize(("first", "second"), DIFFERENT_QUESTIONS)
def test_different_questions_stay_below_threshold(
    real_embedder: SentenceTransformerEmbedder, first: str, second: str
) -> None:
    assert _cosine(real_embedder, first, second) < 0.85


def test_concurrent_calls_match_sequential_vectors(
    real_embedder: SentenceTransformerEmbedder,
) -> None:
    texts = [question for pair in PARAPHRASES for question in pair]
    expected = real_embedder.embed(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: real_embedder.embed([t])[0], texts * 3))
    for position, vector in enumerate(results):
        np.testing.assert_allclose(vector, expected[position % len(texts)], atol=1e-5)


def test_token_count_includes_special_tokens(
    real_embedder: SentenceTransformerEmbedder,
) -> None:
    # "hello world" is two word-piece tokens plus [CLS] and [SEP].
    assert real_embedder.token_count("hello world") == 4
    assert real_embedder.max_tokens == 256


def test_real_cache_serves_paraphrase_and_rejects_other_question(
    real_embedder: SentenceTransformerEmbedder,
) -> None:
    # The committed guard verifier rejects two of these paraphrases, so this test of
    # the embedding runs with the guard's rules only.
    cache = SemanticCache(settings_for_tests(false_hit_guard="rules"), real_embedder)
    for stored, _ in PARAPHRASES:
        cache.store(
            StoreCommand(
                query=stored,
                scope=ACME,
                answer=f"answer to {stored}",
                finish_reason="stop",
            )
        )

    for stored, paraphrase in PARAPHRASES:
        outcome = cache.lookup(LookupQuery(query=paraphrase, scope=ACME))
        assert outcome.layer is HitLayer.SEMANTIC, paraphrase
        assert outcome.entry is not None
        assert outcome.entry.answer == f"answer to {stored}"

    for _, different in DIFFERENT_QUESTIONS[:2]:
        assert not cache.lookup(LookupQuery(query=different, scope=ACME)).hit


def test_long_prompts_with_shared_prefix_do_not_collide(
    real_embedder: SentenceTransformerEmbedder,
) -> None:
    prefix = "Here is the log of our deployment pipeline. " * 40
    first = prefix + "Why did the database migration step fail?"
    second = prefix + "How do I speed up the container build step?"
    # Truncated to the model's window, both prompts embed to the same vector.
    assert real_embedder.token_count(first) > real_embedder.max_tokens
    assert _cosine(real_embedder, first, second) > 0.99

    cache = SemanticCache(settings_for_tests(), real_embedder)
    cache.store(
        StoreCommand(query=first, scope=ACME, answer="migration", finish_reason="stop")
    )

    assert cache.lookup(LookupQuery(query=first, scope=ACME)).layer is HitLayer.EXACT
    assert not cache.lookup(LookupQuery(query=second, scope=ACME)).hit
    assert cache.stats().index_vectors == 0


def test_token_counts_and_embeds_can_interleave(
    real_embedder: SentenceTransformerEmbedder,
) -> None:
    long_text = "Here is a long deployment log line. " * 80
    expected_count = real_embedder.token_count(long_text)
    expected_vector = real_embedder.embed([long_text])[0]

    with ThreadPoolExecutor(max_workers=4) as pool:
        count_futures = []
        embed_futures = []
        for _ in range(8):
            count_futures.append(pool.submit(real_embedder.token_count, long_text))
            embed_futures.append(pool.submit(real_embedder.embed, [long_text]))
            count_futures.append(pool.submit(real_embedder.token_count, long_text))
        counts = [future.result() for future in count_futures]
        vectors = [future.result()[0] for future in embed_futures]

    assert counts == [expected_count] * 16
    for vector in vectors:
        np.testing.assert_allclose(vector, expected_vector, atol=1e-5)
