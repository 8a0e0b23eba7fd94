"""The false-hit guard through a real cache server: real model, FAISS and gRPC."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.errors import GuardArtifactError
from cache_service.guard import WEIGHTS_FILE, default_verifier_dir
from cache_service.server import create_server
from cache_service.testing import FakeEmbedder, settings_for_tests, start_cache_server

ACME = cache_pb2.Scope(tenant="acme", model="auto")
STORED = "Convert 5 km to miles"
OTHER_NUMBER = "Convert 50 km to miles"
PARAPHRASE = "How do I convert 5 km to miles?"


def open_stub(
    embedder: SentenceTransformerEmbedder, guard: str
) -> Iterator[cache_pb2_grpc.CacheServiceStub]:
    settings = settings_for_tests(false_hit_guard=guard)
    with (
        start_cache_server(embedder, settings) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        stored = stub.Store(
            cache_pb2.StoreRequest(
                query=STORED, scope=ACME, answer="3.11 miles", finish_reason="stop"
            )
        )
        assert stored.stored, stored.reason
        yield stub


@pytest.fixture
def guarded(
    real_embedder: SentenceTransformerEmbedder,
) -> Iterator[cache_pb2_grpc.CacheServiceStub]:
    yield from open_stub(real_embedder, "on")


@pytest.fixture
def unguarded(
    real_embedder: SentenceTransformerEmbedder,
) -> Iterator[cache_pb2_grpc.CacheServiceStub]:
    yield from open_stub(real_embedder, "off")


def lookup(
    stub: cache_pb2_grpc.CacheServiceStub, query: str
) -> cache_pb2.LookupResponse:
    return stub.Lookup(cache_pb2.LookupRequest(query=query, scope=ACME))


def test_guard_blocks_other_number(guarded: cache_pb2_grpc.CacheServiceStub) -> None:
    response = lookup(guarded, OTHER_NUMBER)
    assert not response.hit
    assert response.answer == ""


def test_guard_serves_paraphrase(guarded: cache_pb2_grpc.CacheServiceStub) -> None:
    response = lookup(guarded, PARAPHRASE)
    assert response.hit
    assert response.layer == cache_pb2.HIT_LAYER_SEMANTIC
    assert response.answer == "3.11 miles"


def test_guard_off_serves_on_cosine(unguarded: cache_pb2_grpc.CacheServiceStub) -> None:
    # Plain cosine puts the two numbers above the 0.85 threshold, which is the
    # false hit the guard exists for.
    response = lookup(unguarded, OTHER_NUMBER)
    assert response.hit
    assert response.similarity >= 0.85
    assert response.answer == "3.11 miles"


def test_guard_rejection_falls_through_to_paraphrase(
    guarded: cache_pb2_grpc.CacheServiceStub,
) -> None:
    stored = guarded.Store(
        cache_pb2.StoreRequest(
            query="Convert 50 km to miles",
            scope=ACME,
            answer="31.07 miles",
            finish_reason="stop",
        )
    )
    assert stored.stored
    response = lookup(guarded, "How do I convert 50 km to miles?")
    assert response.hit
    assert response.answer == "31.07 miles"


def test_tampered_verifier_keeps_server_not_serving(tmp_path: Path) -> None:
    directory = tmp_path / "guard"
    shutil.copytree(default_verifier_dir(), directory)
    (directory / WEIGHTS_FILE).write_text("{}")
    settings = settings_for_tests(guard_verifier_dir=directory)

    running = create_server(settings, FakeEmbedder())
    try:
        with pytest.raises(RuntimeError, match="failed to load") as raised:
            running.wait_until_serving(timeout_s=30)
        assert isinstance(raised.value.__cause__, GuardArtifactError)
        assert "training.guard_verifier" in str(raised.value.__cause__)
        with grpc.insecure_channel(running.target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        running.stop(grace_s=1)


def test_rejected_candidate_cosine_is_reported_on_miss(
    guarded: cache_pb2_grpc.CacheServiceStub,
    unguarded: cache_pb2_grpc.CacheServiceStub,
) -> None:
    plain = lookup(unguarded, OTHER_NUMBER)

    response = lookup(guarded, OTHER_NUMBER)

    assert not response.hit
    assert response.similarity == pytest.approx(plain.similarity, abs=1e-4)
    assert response.similarity >= 0.85


def test_low_similarity_lookup_gets_no_unverified_hit(
    guarded: cache_pb2_grpc.CacheServiceStub,
) -> None:
    # The router's degraded mode looks up at 0.7, below the verifier's range.
    stored = guarded.Store(
        cache_pb2.StoreRequest(
            query="How do I cancel my subscription?",
            scope=ACME,
            answer="Open billing and choose cancel.",
            finish_reason="stop",
        )
    )
    assert stored.stored

    response = guarded.Lookup(
        cache_pb2.LookupRequest(
            query="Renew my subscription", scope=ACME, min_similarity=0.7
        )
    )

    assert not response.hit
    assert 0.7 <= response.similarity < 0.8
