"""End-to-end tests of the cache gRPC server on port 0 with the real model and FAISS."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service.embedding import Embedder, SentenceTransformerEmbedder
from cache_service.errors import IndexVersionError
from cache_service.server import SERVICE_NAME, RunningServer, create_server
from cache_service.testing import (
    FakeEmbedder,
    ManualClock,
    settings_for_tests,
    start_cache_server,
)

ACME = cache_pb2.Scope(tenant="acme", model="auto")
GLOBEX = cache_pb2.Scope(tenant="globex", model="auto")


@pytest.fixture
def channel(real_server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(real_server.target) as open_channel:
        yield open_channel


@pytest.fixture
def stub(channel: grpc.Channel) -> cache_pb2_grpc.CacheServiceStub:
    return cache_pb2_grpc.CacheServiceStub(channel)


def _store(
    stub: cache_pb2_grpc.CacheServiceStub,
    query: str,
    answer: str,
    scope: cache_pb2.Scope = ACME,
) -> str:
    response = stub.Store(
        cache_pb2.StoreRequest(
            query=query,
            scope=scope,
            answer=answer,
            finish_reason="stop",
            metadata={"model": "smollm2-135m-instruct"},
        )
    )
    assert response.stored, response.reason
    return str(response.entry_id)


def _health(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=service))
    return int(response.status)


def test_health_reports_serving(channel: grpc.Channel) -> None:
    assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
    assert _health(channel, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_cache_service(channel: grpc.Channel) -> None:
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "querygate.cache.v1.CacheService" in services
    assert "grpc.health.v1.Health" in services


def test_store_then_exact_and_paraphrase_hits(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    entry_id = _store(stub, "Who wrote Hamlet?", "William Shakespeare")

    exact = stub.Lookup(cache_pb2.LookupRequest(query="who wrote hamlet", scope=ACME))
    semantic = stub.Lookup(
        cache_pb2.LookupRequest(query="Who is the author of Hamlet?", scope=ACME)
    )

    assert exact.hit
    assert exact.layer == cache_pb2.HIT_LAYER_EXACT
    assert exact.entry_id == entry_id
    assert exact.answer == "William Shakespeare"
    assert dict(exact.metadata) == {"model": "smollm2-135m-instruct"}
    assert semantic.hit
    assert semantic.layer == cache_pb2.HIT_LAYER_SEMANTIC
    assert semantic.similarity >= 0.85
    assert semantic.answer == "William Shakespeare"


def test_different_question_misses_with_similarity(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    _store(stub, "How do I reverse a list in Python?", "Use reversed() or [::-1].")

    response = stub.Lookup(
        cache_pb2.LookupRequest(query="How do I sort a list in Python?", scope=ACME)
    )

    assert not response.hit
    assert response.layer == cache_pb2.HIT_LAYER_UNSPECIFIED
    assert response.answer == ""
    assert 0.0 < response.similarity < 0.85


def test_other_tenant_never_receives_entry(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    _store(stub, "What is our refund policy?", "acme: 30 days", scope=ACME)

    for query in ("What is our refund policy?", "What's your refund policy?"):
        response = stub.Lookup(cache_pb2.LookupRequest(query=query, scope=GLOBEX))
        assert not response.hit
        assert response.answer == ""


def test_other_system_prompt_misses(stub: cache_pb2_grpc.CacheServiceStub) -> None:
    _store(stub, "Who wrote Hamlet?", "Shakespeare", scope=ACME)
    french = cache_pb2.Scope(
        tenant="acme", model="auto", system_prompt="Answer in French."
    )
    response = stub.Lookup(
        cache_pb2.LookupRequest(query="Who wrote Hamlet?", scope=french)
    )
    assert not response.hit


def test_min_similarity_override_is_applied(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    _store(stub, "Who wrote Hamlet?", "Shakespeare")
    request = cache_pb2.LookupRequest(
        query="Who is the author of Hamlet?", scope=ACME, min_similarity=0.999
    )
    assert not stub.Lookup(request).hit


def test_length_cut_answer_is_not_stored(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    response = stub.Store(
        cache_pb2.StoreRequest(
            query="Explain quantum computing",
            scope=ACME,
            answer="Quantum computing uses qubits, which",
            finish_reason="length",
        )
    )
    lookup = stub.Lookup(
        cache_pb2.LookupRequest(query="Explain quantum computing", scope=ACME)
    )
    assert not response.stored
    assert response.entry_id == ""
    assert "finish_reason is 'length'" in response.reason
    assert not lookup.hit


@pytest.mark.parametrize(
    ("request_message", "message"),
    [
        pytest.param(
            cache_pb2.LookupRequest(query="", scope=ACME),
            "query must contain a visible character",
            id="empty",
        ),
        pytest.param(
            cache_pb2.LookupRequest(query=" \t\n ", scope=ACME),
            "query must contain a visible character",
            id="whitespace",
        ),
        pytest.param(
            cache_pb2.LookupRequest(query="q" * 16_001, scope=ACME),
            "query must be at most 16000 characters; got 16001",
            id="too-long",
        ),
        pytest.param(
            cache_pb2.LookupRequest(query="hello"),
            "scope.tenant is required",
            id="missing-tenant",
        ),
        pytest.param(
            cache_pb2.LookupRequest(
                query="hello",
                scope=cache_pb2.Scope(tenant="acme\n12:00:00 ERROR forged"),
            ),
            r"scope.tenant must contain only printable characters and no "
            r"whitespace; got U\+000A at position 4",
            id="tenant-newline",
        ),
        pytest.param(
            cache_pb2.LookupRequest(
                query="hello", scope=cache_pb2.Scope(tenant="t" * 129)
            ),
            "scope.tenant must be at most 128 characters; got 129",
            id="tenant-too-long",
        ),
        pytest.param(
            cache_pb2.LookupRequest(query="hello", scope=ACME, min_similarity=1.5),
            r"min_similarity must be in \(0, 1\]; got 1.5",
            id="similarity-above-one",
        ),
        pytest.param(
            cache_pb2.LookupRequest(query="hello", scope=ACME, min_similarity=0.0),
            r"min_similarity must be in \(0, 1\]; got 0.0",
            id="similarity-zero",
        ),
    ],
)
def test_invalid_lookup_returns_invalid_argument(
    stub: cache_pb2_grpc.CacheServiceStub,
    request_message: cache_pb2.LookupRequest,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Lookup(request_message)
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert re.search(message, error.details())  # type: ignore[attr-defined]
    assert stub.Stats(cache_pb2.StatsRequest()).embedding_dimension == 384


def test_invalid_store_is_invalid_argument(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Store(
            cache_pb2.StoreRequest(
                query="  ", scope=ACME, answer="a", finish_reason="stop"
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_invalidate_by_entry_id_tenant_and_query(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    first = _store(stub, "Who wrote Hamlet?", "Shakespeare")
    _store(stub, "What is the capital of France?", "Paris")
    _store(stub, "What is the boiling point of water?", "100 C")
    _store(stub, "Who wrote Hamlet?", "Shakespeare", scope=GLOBEX)

    by_id = stub.Invalidate(cache_pb2.InvalidateRequest(entry_id=first))
    by_query = stub.Invalidate(
        cache_pb2.InvalidateRequest(
            query=cache_pb2.QueryTarget(
                query="what is the capital of france", scope=ACME
            )
        )
    )
    acme_left = stub.Invalidate(cache_pb2.InvalidateRequest(tenant="acme"))

    assert by_id.removed == 1
    assert by_query.removed == 1
    assert acme_left.removed == 1
    assert stub.Stats(cache_pb2.StatsRequest()).entries == 1
    globex = stub.Lookup(
        cache_pb2.LookupRequest(query="Who wrote Hamlet?", scope=GLOBEX)
    )
    assert globex.hit


def test_invalidate_by_id_checks_entry_tenant(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    entry_id = _store(stub, "Who wrote Hamlet?", "Shakespeare")
    missing_id = str(int(entry_id) + 1000)

    other_tenant = stub.Invalidate(
        cache_pb2.InvalidateRequest(entry_id=entry_id, entry_tenant="globex")
    )
    missing = stub.Invalidate(
        cache_pb2.InvalidateRequest(entry_id=missing_id, entry_tenant="globex")
    )
    after = stub.Lookup(cache_pb2.LookupRequest(query="Who wrote Hamlet?", scope=ACME))
    own_tenant = stub.Invalidate(
        cache_pb2.InvalidateRequest(entry_id=entry_id, entry_tenant="acme")
    )

    assert other_tenant == missing
    assert other_tenant.removed == 0
    assert after.hit
    assert after.entry_id == entry_id
    assert own_tenant.removed == 1


@pytest.mark.parametrize(
    ("request_message", "message"),
    [
        pytest.param(
            cache_pb2.InvalidateRequest(), "target must be set", id="no-target"
        ),
        pytest.param(
            cache_pb2.InvalidateRequest(entry_id="abc"),
            "entry_id must be a decimal id",
            id="bad-id",
        ),
        pytest.param(
            cache_pb2.InvalidateRequest(entry_id=" 1"),
            "written with the ASCII digits 0-9 only",
            id="id-with-space",
        ),
        pytest.param(
            cache_pb2.InvalidateRequest(entry_id="\u0662"),
            "written with the ASCII digits 0-9 only",
            id="arabic-indic-digit",
        ),
        pytest.param(
            cache_pb2.InvalidateRequest(entry_id="1_0"),
            "entry_id must be a decimal id",
            id="id-with-underscore",
        ),
        pytest.param(
            cache_pb2.InvalidateRequest(entry_id="9" * 20),
            "entry_id must be a decimal id",
            id="id-above-int64",
        ),
        pytest.param(
            cache_pb2.InvalidateRequest(entry_id="1" * 5000),
            "entry_id must be a decimal id",
            id="id-of-5000-digits",
        ),
        pytest.param(
            cache_pb2.InvalidateRequest(tenant=" "),
            "tenant is required",
            id="blank-tenant",
        ),
        pytest.param(
            cache_pb2.InvalidateRequest(tenant="acme\r\nforged"),
            "tenant must contain only printable characters",
            id="tenant-control-char",
        ),
        pytest.param(
            cache_pb2.InvalidateRequest(tenant="acme", entry_tenant="acme"),
            "entry_tenant is valid only with entry_id",
            id="entry-tenant-with-tenant-target",
        ),
        pytest.param(
            cache_pb2.InvalidateRequest(entry_id="1", entry_tenant="acme\r\nforged"),
            "entry_tenant must contain only printable characters",
            id="entry-tenant-control-char",
        ),
    ],
)
def test_invalid_invalidate_names_field(
    stub: cache_pb2_grpc.CacheServiceStub,
    request_message: cache_pb2.InvalidateRequest,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Invalidate(request_message)
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert message in error.details()  # type: ignore[attr-defined]


def test_stats_report_model_and_counters(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    _store(stub, "Who wrote Hamlet?", "Shakespeare")
    stub.Lookup(cache_pb2.LookupRequest(query="Who wrote Hamlet?", scope=ACME))
    stub.Lookup(
        cache_pb2.LookupRequest(query="Who is the author of Hamlet?", scope=ACME)
    )
    stub.Lookup(cache_pb2.LookupRequest(query="What causes rain?", scope=ACME))

    stats = stub.Stats(cache_pb2.StatsRequest())

    assert stats.embedding_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert stats.embedding_dimension == 384
    assert stats.min_cosine_similarity == pytest.approx(0.85)
    assert stats.entries == 1
    assert stats.index_vectors == 1
    assert stats.stores == 1
    assert stats.exact_hits == 1
    assert stats.semantic_hits == 1
    assert stats.misses == 1


def test_health_is_not_serving_until_model_loads() -> None:
    release = threading.Event()
    embedder = FakeEmbedder()

    def slow_load() -> Embedder:
        release.wait(timeout=60)
        return embedder

    running = create_server(settings_for_tests(), load_embedder=slow_load)
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            assert _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as raised:
                stub.Lookup(cache_pb2.LookupRequest(query="hi", scope=ACME))
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]

            release.set()
            running.wait_until_serving(timeout_s=30)

            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
            assert not stub.Lookup(cache_pb2.LookupRequest(query="hi", scope=ACME)).hit
    finally:
        release.set()
        running.stop(grace_s=1)


def test_failed_model_load_stays_not_serving() -> None:
    def broken_load() -> Embedder:
        raise OSError("model files missing")

    running = create_server(settings_for_tests(), load_embedder=broken_load)
    try:
        with pytest.raises(RuntimeError, match="failed to load"):
            running.wait_until_serving(timeout_s=30)
        with grpc.insecure_channel(running.target) as channel:
            assert _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        running.stop(grace_s=1)


def test_port_zero_binds_distinct_ports(
    real_embedder: SentenceTransformerEmbedder,
) -> None:
    first = create_server(settings_for_tests(), real_embedder)
    second = create_server(settings_for_tests(), real_embedder)
    try:
        assert first.port != second.port
        assert first.port > 0
    finally:
        first.stop(grace_s=1)
        second.stop(grace_s=1)


def test_background_sweep_removes_expired_entries() -> None:
    clock = ManualClock()
    settings = settings_for_tests(sweep_interval_s=0.05)
    with (
        start_cache_server(FakeEmbedder(), settings, clock=clock) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        _store(stub, "question", "answer")
        clock.advance(3601)

        # Wait for the sweeper thread; the bound only prevents a hang.
        deadline = time.monotonic() + 30
        stats = stub.Stats(cache_pb2.StatsRequest())
        while stats.expirations == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            stats = stub.Stats(cache_pb2.StatsRequest())

    assert stats.expirations == 1
    assert stats.entries == 0
    assert stats.index_vectors == 0


def test_database_of_other_model_is_rejected(tmp_path: Path) -> None:
    settings = settings_for_tests(data_dir=tmp_path)
    with (
        start_cache_server(FakeEmbedder(dimension=32), settings) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        _store(cache_pb2_grpc.CacheServiceStub(channel), "question", "answer")

    running = create_server(settings, FakeEmbedder(dimension=64))
    try:
        with pytest.raises(RuntimeError, match="failed to load") as raised:
            running.wait_until_serving(timeout_s=30)
        assert isinstance(raised.value.__cause__, IndexVersionError)
        assert "Delete or move" in str(raised.value.__cause__)
        with grpc.insecure_channel(running.target) as channel:
            assert _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        running.stop(grace_s=1)


def test_follow_up_never_hits_other_conversation(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    rust = cache_pb2.Scope(
        tenant="acme",
        model="auto",
        conversation=[
            cache_pb2.ChatMessage(role="user", content="How do I read a file in Rust?"),
            cache_pb2.ChatMessage(role="assistant", content="Use std::fs::read."),
        ],
    )
    go = cache_pb2.Scope(
        tenant="acme",
        model="auto",
        conversation=[
            cache_pb2.ChatMessage(role="user", content="How do I read a file in Go?"),
            cache_pb2.ChatMessage(role="assistant", content="Use os.ReadFile."),
        ],
    )
    _store(stub, "And how do I write one?", "Use std::fs::write.", scope=rust)

    same = stub.Lookup(
        cache_pb2.LookupRequest(query="and how do I write one", scope=rust)
    )
    other = stub.Lookup(
        cache_pb2.LookupRequest(query="And how do I write one?", scope=go)
    )

    assert same.answer == "Use std::fs::write."
    assert not other.hit
    assert other.answer == ""
