"""Tests of streamed routing, in the domain and over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from fake_openai_server import FakeOpenAIServer, Reply, stream_events
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.backends import build_backend
from router_service.domain import CacheStatus, RouteQuery, RouteResult
from router_service.errors import ModelResponseError
from router_service.server import RunningServer, create_server
from router_service.settings import RouterSettings
from router_service.streaming import StreamingRouter
from router_service.testing import (
    FakeCache,
    FakeClassifier,
    model_for_tests,
    settings_for_tests,
)

pytestmark = pytest.mark.anyio


def make_router(
    settings: RouterSettings | None = None, cache: FakeCache | None = None
) -> tuple[StreamingRouter, FakeCache]:
    settings = settings or settings_for_tests()
    cache = cache if cache is not None else FakeCache()
    backends = {name: build_backend(m) for name, m in settings.models.items()}
    router = StreamingRouter(settings, backends, cache)
    router.attach_classifier(FakeClassifier())
    return router, cache


async def collect(
    router: StreamingRouter, query: RouteQuery
) -> tuple[list[str], RouteResult]:
    deltas: list[str] = []
    summary = None
    async for event in router.route_stream(query):
        if isinstance(event, str):
            deltas.append(event)
        else:
            summary = event
    assert summary is not None, "stream ended without a summary"
    return deltas, summary


QUERY = RouteQuery(query="What is the capital of France?", tenant="acme")


def remote_settings(server: FakeOpenAIServer) -> RouterSettings:
    models = {
        "remote": model_for_tests("remote", backend="openai", base_url=server.base_url),
        "spare": model_for_tests("spare"),
        "big": model_for_tests("big"),
    }
    return settings_for_tests(
        models=models,
        tiers={
            "simple": ("remote", "spare"),
            "medium": ("spare",),
            "complex": ("big",),
        },
    )


async def test_stream_miss_forwards_deltas_and_stores() -> None:
    router, cache = make_router()
    deltas, summary = await collect(router, QUERY)

    assert len(deltas) == 8
    assert "".join(deltas) == summary.answer
    assert summary.cache_status is CacheStatus.MISS
    assert summary.output_tokens == 8
    assert summary.cost_usd > 0
    assert len(cache.stores) == 1


async def test_stream_hit_sends_whole_answer() -> None:
    router, _ = make_router()
    _, first = await collect(router, QUERY)
    deltas, summary = await collect(router, QUERY)

    assert deltas == [first.answer]
    assert summary.cache_status is CacheStatus.EXACT_HIT
    assert summary.cost_usd == 0.0


async def test_stream_from_http_backend(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.enqueue(Reply(events=stream_events(["Par", "is", "."])))
    router, cache = make_router(remote_settings(fake_openai))
    deltas, summary = await collect(router, QUERY)

    assert deltas == ["Par", "is", "."]
    assert summary.model == "remote"
    assert summary.input_tokens == 9
    assert summary.output_tokens == 3
    assert cache.stores[0][2] == "Paris."


async def test_dropped_stream_is_not_stored(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.enqueue(
        Reply(events=stream_events(["Par", "is", "."]), drop_after_events=2)
    )
    router, cache = make_router(remote_settings(fake_openai))
    deltas: list[str] = []
    with pytest.raises(ModelResponseError):
        async for event in router.route_stream(QUERY):
            assert isinstance(event, str)
            deltas.append(event)

    assert deltas == ["Par", "is"]
    assert cache.stores == []


async def test_stream_retries_before_first_text(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.enqueue(
        Reply(status=503, body={}), Reply(events=stream_events(["Hi", "."]))
    )
    router, _ = make_router(remote_settings(fake_openai))
    deltas, summary = await collect(router, QUERY)

    assert deltas == ["Hi", "."]
    assert summary.model == "remote"
    assert len(fake_openai.requests) == 2


async def test_stream_falls_back_before_first_text(
    fake_openai: FakeOpenAIServer,
) -> None:
    fake_openai.enqueue(*(Reply(status=500, body={}) for _ in range(3)))
    router, _ = make_router(remote_settings(fake_openai))
    deltas, summary = await collect(router, QUERY)

    assert summary.model == "spare"
    assert "".join(deltas) == summary.answer


async def test_length_cut_stream_is_not_stored(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.enqueue(Reply(events=stream_events(["A", "B"], finish_reason="length")))
    router, cache = make_router(remote_settings(fake_openai))
    _, summary = await collect(router, QUERY)

    assert summary.finish_reason == "length"
    assert cache.stores == []


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await create_server(
        settings_for_tests(), cache=FakeCache(), classifier=FakeClassifier()
    )
    yield running
    await running.stop(grace_s=0.5)


async def test_route_stream_rpc_sends_deltas_then_summary(
    server: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        request = router_pb2.RouteRequest(query="What is DNS?", tenant="acme")
        events = [event async for event in stub.RouteStream(request, timeout=10)]

    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[-1] == "summary"
    assert set(kinds[:-1]) == {"delta"}
    summary = events[-1].summary
    assert "".join(e.delta for e in events[:-1]) == summary.answer
    assert summary.cache_status == router_pb2.CACHE_STATUS_MISS
    assert summary.usage.output_tokens == 8


async def test_route_stream_rpc_rejects_bad_input(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        request = router_pb2.RouteRequest(query="", tenant="acme")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.RouteStream(request, timeout=10):
                pass

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("query:")


async def test_stream_serves_degraded_answer_when_models_fail() -> None:
    models = {name: model_for_tests(name, failure_rate=1.0) for name in ("s", "m", "c")}
    settings = settings_for_tests(
        models=models, tiers={"simple": ("s",), "medium": ("m",), "complex": ("c",)}
    )
    cache = FakeCache(similar={"Capital of France??": (QUERY.query, 0.75)})
    _, stored = await collect(make_router(cache=cache)[0], QUERY)
    router, _ = make_router(settings, cache)
    deltas, summary = await collect(
        router, RouteQuery(query="Capital of France??", tenant="acme")
    )

    assert deltas == [stored.answer]
    assert summary.degraded
    assert summary.cache_status is CacheStatus.SEMANTIC_HIT
