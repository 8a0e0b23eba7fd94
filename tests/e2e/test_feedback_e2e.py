"""Feedback end to end: real router and cache servers, real model and FAISS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from e2e_servers import router_settings, start_router
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc

from cache_service.server import RunningServer as CacheServer
from router_service.server import RunningServer
from router_service.testing import FakeClassifier

pytestmark = pytest.mark.anyio

QUESTION = "Who wrote the novel Moby-Dick?"
PARAPHRASE = "Who is the author of Moby-Dick?"
BAD = router_pb2.FEEDBACK_RATING_BAD
GOOD = router_pb2.FEEDBACK_RATING_GOOD


@pytest.fixture
async def router(cache_server: CacheServer) -> AsyncIterator[RunningServer]:
    # The classifier plays no part in feedback; the fake keeps these tests
    # independent of the trained artifact.
    running = await start_router(router_settings(cache_server.target), FakeClassifier())
    yield running
    await running.stop(grace_s=1)


@pytest.fixture
async def stub(
    router: RunningServer,
) -> AsyncIterator[router_pb2_grpc.RouterServiceStub]:
    async with grpc.aio.insecure_channel(router.target) as channel:
        yield router_pb2_grpc.RouterServiceStub(channel)


async def route(
    stub: router_pb2_grpc.RouterServiceStub, query: str = QUESTION, tenant: str = "acme"
) -> router_pb2.RouteResponse:
    request = router_pb2.RouteRequest(query=query, tenant=tenant)
    return await stub.Route(request, timeout=30)


def cache_stats(cache_server: CacheServer) -> cache_pb2.StatsResponse:
    with grpc.insecure_channel(cache_server.target) as channel:
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        return stub.Stats(cache_pb2.StatsRequest(), timeout=30)


def router_marks(router: RunningServer, rating: str) -> float:
    value = router.metrics.registry.get_sample_value(
        "querygate_router_feedback_total", {"rating": rating}
    )
    assert value is not None
    return value


async def test_bad_mark_by_request_id_stops_hits(
    stub: router_pb2_grpc.RouterServiceStub,
    router: RunningServer,
    cache_server: CacheServer,
) -> None:
    first = await route(stub)
    hit = await route(stub)
    assert hit.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT

    response = await stub.Feedback(
        router_pb2.FeedbackRequest(
            tenant="acme", request_id=hit.request_id, rating=BAD
        ),
        timeout=30,
    )
    paraphrase = await route(stub, PARAPHRASE)

    assert response.cache_entry_id == first.cache_entry_id
    assert response.removed
    assert paraphrase.cache_status == router_pb2.CACHE_STATUS_MISS
    assert cache_stats(cache_server).feedback_bad == 1
    assert router_marks(router, "bad") == 1


async def test_good_mark_by_entry_id_keeps_hits(
    stub: router_pb2_grpc.RouterServiceStub,
    router: RunningServer,
    cache_server: CacheServer,
) -> None:
    first = await route(stub)

    response = await stub.Feedback(
        router_pb2.FeedbackRequest(
            tenant="acme", cache_entry_id=first.cache_entry_id, rating=GOOD
        ),
        timeout=30,
    )
    paraphrase = await route(stub, PARAPHRASE)

    assert not response.removed
    assert paraphrase.cache_status == router_pb2.CACHE_STATUS_SEMANTIC_HIT
    assert paraphrase.cache_entry_id == first.cache_entry_id
    assert cache_stats(cache_server).feedback_good == 1
    assert router_marks(router, "good") == 1


async def test_tenant_cannot_mark_other_tenant_answer(
    stub: router_pb2_grpc.RouterServiceStub, cache_server: CacheServer
) -> None:
    first = await route(stub, tenant="acme")
    attempts = (
        router_pb2.FeedbackRequest(
            tenant="globex", cache_entry_id=first.cache_entry_id, rating=BAD
        ),
        router_pb2.FeedbackRequest(
            tenant="globex", request_id=first.request_id, rating=BAD
        ),
    )

    for attempt in attempts:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Feedback(attempt, timeout=30)
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND

    again = await route(stub, tenant="acme")
    assert again.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT
    assert cache_stats(cache_server).feedback_bad == 0


async def test_cache_rejects_malformed_entry_id(
    stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    request = router_pb2.FeedbackRequest(
        tenant="acme", cache_entry_id="entry-7", rating=BAD
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Feedback(request, timeout=30)

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "cache_entry_id: the cache rejected it" in str(caught.value.details())


async def test_feedback_without_rating_is_invalid(
    stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    first = await route(stub)
    request = router_pb2.FeedbackRequest(tenant="acme", request_id=first.request_id)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Feedback(request, timeout=30)

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert str(caught.value.details()).startswith("rating: must be")
    again = await route(stub)
    assert again.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT
