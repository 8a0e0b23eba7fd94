"""Feedback marks: the recorder on a fake embedder, the RPC on the real model."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service.cache import SemanticCache
from cache_service.entries import LookupQuery, StoreCommand
from cache_service.errors import EntryNotFoundError, InvalidRequestError
from cache_service.feedback import FeedbackRating, FeedbackRecorder
from cache_service.scope import Scope
from cache_service.server import RunningServer

ACME_SCOPE = Scope(tenant="acme")
ACME = cache_pb2.Scope(tenant="acme", model="auto")
GLOBEX = cache_pb2.Scope(tenant="globex", model="auto")
GOOD = cache_pb2.FEEDBACK_RATING_GOOD
BAD = cache_pb2.FEEDBACK_RATING_BAD


def _store_entry(cache: SemanticCache, query: str) -> int:
    outcome = cache.store(
        StoreCommand(
            query=query, scope=ACME_SCOPE, answer="an answer", finish_reason="stop"
        )
    )
    assert outcome.entry_id is not None
    return outcome.entry_id


def test_recorder_bad_mark_removes_entry(fake_cache: SemanticCache) -> None:
    recorder = FeedbackRecorder(fake_cache)
    entry_id = _store_entry(fake_cache, "What is DNS?")

    removed = recorder.record(entry_id, "acme", FeedbackRating.BAD)

    assert removed
    assert not fake_cache.lookup(LookupQuery("What is DNS?", ACME_SCOPE)).hit
    assert fake_cache.entry_tenant(entry_id) is None
    assert recorder.counts().bad == 1
    assert recorder.counts().good == 0
    assert fake_cache.consistency_problems() == []


def test_recorder_good_mark_keeps_entry(fake_cache: SemanticCache) -> None:
    recorder = FeedbackRecorder(fake_cache)
    entry_id = _store_entry(fake_cache, "What is DNS?")

    removed = recorder.record(entry_id, "acme", FeedbackRating.GOOD)

    assert not removed
    assert fake_cache.lookup(LookupQuery("What is DNS?", ACME_SCOPE)).hit
    assert recorder.counts().good == 1
    assert recorder.counts().bad == 0


def test_recorder_rejects_other_tenant(fake_cache: SemanticCache) -> None:
    recorder = FeedbackRecorder(fake_cache)
    entry_id = _store_entry(fake_cache, "What is DNS?")

    with pytest.raises(EntryNotFoundError, match="not found for tenant 'globex'"):
        recorder.record(entry_id, "globex", FeedbackRating.BAD)

    assert fake_cache.entry_tenant(entry_id) == "acme"
    assert recorder.counts().bad == 0


@pytest.mark.parametrize("tenant", ["", "   "], ids=["empty", "whitespace"])
def test_recorder_requires_tenant(fake_cache: SemanticCache, tenant: str) -> None:
    recorder = FeedbackRecorder(fake_cache)
    entry_id = _store_entry(fake_cache, "What is DNS?")

    with pytest.raises(InvalidRequestError, match="tenant is required"):
        recorder.record(entry_id, tenant, FeedbackRating.BAD)


def test_recorder_concurrent_bad_marks_remove_once(
    fake_cache: SemanticCache,
) -> None:
    recorder = FeedbackRecorder(fake_cache)
    entry_id = _store_entry(fake_cache, "What is DNS?")
    results: list[bool | str] = []
    start = threading.Barrier(8)

    def mark() -> None:
        start.wait()
        try:
            results.append(recorder.record(entry_id, "acme", FeedbackRating.BAD))
        except EntryNotFoundError:
            results.append("not found")

    threads = [threading.Thread(target=mark) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results.count(True) == 1
    assert len(results) == 8
    # Marks that passed the tenant check before the removal still count.
    assert recorder.counts().bad == 8 - results.count("not found")
    assert fake_cache.consistency_problems() == []


@pytest.fixture
def stub(real_server: RunningServer) -> Iterator[cache_pb2_grpc.CacheServiceStub]:
    with grpc.insecure_channel(real_server.target) as channel:
        yield cache_pb2_grpc.CacheServiceStub(channel)


def _store(
    stub: cache_pb2_grpc.CacheServiceStub,
    query: str,
    answer: str,
    scope: cache_pb2.Scope = ACME,
) -> str:
    response = stub.Store(
        cache_pb2.StoreRequest(
            query=query, scope=scope, answer=answer, finish_reason="stop"
        )
    )
    assert response.stored, response.reason
    return str(response.entry_id)


def _lookup(stub: cache_pb2_grpc.CacheServiceStub, query: str) -> bool:
    return bool(stub.Lookup(cache_pb2.LookupRequest(query=query, scope=ACME)).hit)


def _feedback(
    stub: cache_pb2_grpc.CacheServiceStub,
    entry_id: str,
    rating: int,
    tenant: str = "acme",
) -> cache_pb2.FeedbackResponse:
    return stub.Feedback(
        cache_pb2.FeedbackRequest(entry_id=entry_id, tenant=tenant, rating=rating)
    )


def test_bad_mark_stops_exact_and_semantic_hits(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    entry_id = _store(stub, "Who wrote Hamlet?", "Charles Dickens")
    assert _lookup(stub, "who wrote hamlet")
    assert _lookup(stub, "Who is the author of Hamlet?")

    response = _feedback(stub, entry_id, BAD)

    assert response.removed
    assert not _lookup(stub, "who wrote hamlet")
    assert not _lookup(stub, "Who is the author of Hamlet?")


def test_good_mark_keeps_serving_entry(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    entry_id = _store(stub, "Who wrote Hamlet?", "William Shakespeare")

    response = _feedback(stub, entry_id, GOOD)

    assert not response.removed
    assert _lookup(stub, "Who wrote Hamlet?")


def test_stats_count_good_and_bad_marks(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    first = _store(stub, "Who wrote Hamlet?", "William Shakespeare")
    second = _store(stub, "What is the boiling point of water?", "100 C at sea level")
    third = _store(stub, "What is the capital of France?", "Lyon")

    _feedback(stub, first, GOOD)
    _feedback(stub, second, GOOD)
    _feedback(stub, third, BAD)
    stats = stub.Stats(cache_pb2.StatsRequest())

    assert stats.feedback_good == 2
    assert stats.feedback_bad == 1
    assert stats.entries == 2


def test_mark_on_other_tenant_entry_is_not_found(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    entry_id = _store(stub, "What is our refund policy?", "30 days", scope=ACME)

    with pytest.raises(grpc.RpcError) as caught:
        _feedback(stub, entry_id, BAD, tenant="globex")

    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert f"entry_id {entry_id} not found" in str(caught.value.details())
    assert _lookup(stub, "What is our refund policy?")
    assert stub.Stats(cache_pb2.StatsRequest()).feedback_bad == 0


def test_second_bad_mark_is_not_found(
    stub: cache_pb2_grpc.CacheServiceStub,
) -> None:
    entry_id = _store(stub, "Who wrote Hamlet?", "Charles Dickens")
    _feedback(stub, entry_id, BAD)

    with pytest.raises(grpc.RpcError) as caught:
        _feedback(stub, entry_id, BAD)

    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_message", "message"),
    [
        pytest.param(
            cache_pb2.FeedbackRequest(entry_id="1", tenant="acme"),
            "rating must be FEEDBACK_RATING_GOOD or FEEDBACK_RATING_BAD; got "
            "FEEDBACK_RATING_UNSPECIFIED",
            id="unspecified-rating",
        ),
        pytest.param(
            cache_pb2.FeedbackRequest(entry_id="1", tenant="acme", rating=7),
            "rating must be FEEDBACK_RATING_GOOD or FEEDBACK_RATING_BAD; got 7",
            id="unknown-rating",
        ),
        pytest.param(
            cache_pb2.FeedbackRequest(entry_id="req-1", tenant="acme", rating=BAD),
            "entry_id must be a decimal id",
            id="entry-id-not-decimal",
        ),
        pytest.param(
            cache_pb2.FeedbackRequest(entry_id="\u0661", tenant="acme", rating=BAD),
            "written with the ASCII digits 0-9 only",
            id="entry-id-arabic-indic-digit",
        ),
        pytest.param(
            cache_pb2.FeedbackRequest(entry_id="1 ", tenant="acme", rating=BAD),
            "written with the ASCII digits 0-9 only",
            id="entry-id-with-space",
        ),
        pytest.param(
            cache_pb2.FeedbackRequest(entry_id="1", rating=BAD),
            "tenant is required",
            id="missing-tenant",
        ),
    ],
)
def test_invalid_feedback_names_field(
    stub: cache_pb2_grpc.CacheServiceStub,
    request_message: cache_pb2.FeedbackRequest,
    message: str,
) -> None:
    _store(stub, "Who wrote Hamlet?", "William Shakespeare")

    with pytest.raises(grpc.RpcError) as caught:
        stub.Feedback(request_message)

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(caught.value.details())
    assert _lookup(stub, "Who wrote Hamlet?")
