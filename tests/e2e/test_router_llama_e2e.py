"""End to end on the real local model: router, cache and llama.cpp's server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from e2e_servers import router_settings, start_router
from querygate.router.v1 import router_pb2, router_pb2_grpc

from cache_service.server import RunningServer as CacheServer
from router_service.testing import model_for_tests

pytestmark = [pytest.mark.anyio, pytest.mark.llama]


@pytest.fixture
async def llama_stub(
    cache_server: CacheServer, real_classifier: object, llama_server: str
) -> AsyncIterator[router_pb2_grpc.RouterServiceStub]:
    models = {
        name: model_for_tests(
            name,
            backend="openai",
            base_url=llama_server,
            model="smollm2-135m-instruct",
            context_window=2048,
            timeout_s=120.0,
        )
        for name in ("local-simple", "local-medium", "local-complex")
    }
    router = await start_router(
        router_settings(cache_server.target, models), real_classifier
    )
    async with grpc.aio.insecure_channel(router.target) as channel:
        yield router_pb2_grpc.RouterServiceStub(channel)
    await router.stop(grace_s=1)


async def test_local_model_answers_then_cache_hits(
    llama_stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    request = router_pb2.RouteRequest(
        query="What is the capital of France?",
        tenant="acme",
        temperature=0.0,
        max_tokens=256,
    )
    miss = await llama_stub.Route(request, timeout=180)
    hit = await llama_stub.Route(request, timeout=180)

    assert miss.cache_status == router_pb2.CACHE_STATUS_MISS
    assert miss.answer.strip()
    assert "simulated" not in miss.answer
    assert miss.usage.input_tokens > 0
    assert miss.usage.output_tokens > 0
    assert miss.model.startswith("local-")
    assert miss.finish_reason == "stop"
    assert hit.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT
    assert hit.answer == miss.answer


async def test_local_model_streams_then_cache_hits(
    llama_stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    request = router_pb2.RouteRequest(
        query="Name one primary colour.",
        tenant="acme",
        temperature=0.0,
        max_tokens=256,
    )
    streamed = [event async for event in llama_stub.RouteStream(request, timeout=180)]
    hit = await llama_stub.Route(request, timeout=180)

    deltas = [event.delta for event in streamed[:-1]]
    summary = streamed[-1].summary
    assert len(deltas) > 1
    assert "".join(deltas) == summary.answer
    assert summary.cache_status == router_pb2.CACHE_STATUS_MISS
    assert summary.finish_reason == "stop"
    assert summary.usage.output_tokens > 0
    assert hit.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT
    assert hit.answer == summary.answer
