"""Single-flight end to end: real router and cache, an HTTP model that counts calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import grpc
import pytest
from e2e_servers import TIERS, router_settings, start_router
from fake_openai_server import (
    FakeOpenAIServer,
    Reply,
    completion_body,
    run_fake_openai_server,
)
from querygate.router.v1 import router_pb2, router_pb2_grpc

from cache_service.server import RunningServer as CacheServer
from router_service.server import RunningServer
from router_service.testing import (
    FakeClassifier,
    model_for_tests,
    settings_for_tests,
)

pytestmark = pytest.mark.anyio

QUESTION = "What is the tallest mountain in Africa?"
CONCURRENT_CALLS = 20
# The model replies this late, so that every concurrent request has finished
# its cache lookup and joined the flight before the first call returns.
MODEL_DELAY_S = 2.0


@pytest.fixture
def model_server() -> Iterator[FakeOpenAIServer]:
    with run_fake_openai_server() as server:
        yield server


@pytest.fixture
async def stub(
    cache_server: CacheServer, model_server: FakeOpenAIServer
) -> AsyncIterator[router_pb2_grpc.RouterServiceStub]:
    model = model_for_tests(
        "remote", backend="openai", base_url=model_server.base_url, timeout_s=20.0
    )
    # Every tier names the same model, so a failed call has no fallback.
    settings = replace(
        settings_for_tests(
            models={"remote": model}, tiers={tier: ("remote",) for tier in TIERS}
        ),
        cache=router_settings(cache_server.target).cache,
    )
    # The classifier plays no part in single-flight; the fake keeps these tests
    # independent of the trained artifact.
    running: RunningServer = await start_router(settings, FakeClassifier())
    async with grpc.aio.insecure_channel(running.target) as channel:
        yield router_pb2_grpc.RouterServiceStub(channel)
    await running.stop(grace_s=1)


async def route_all(
    stub: router_pb2_grpc.RouterServiceStub,
) -> list[router_pb2.RouteResponse | grpc.aio.AioRpcError]:
    request = router_pb2.RouteRequest(query=QUESTION, tenant="acme")
    calls = [stub.Route(request, timeout=60) for _ in range(CONCURRENT_CALLS)]
    return await asyncio.gather(*calls, return_exceptions=True)  # type: ignore[arg-type]


async def test_identical_misses_make_one_model_call(
    stub: router_pb2_grpc.RouterServiceStub, model_server: FakeOpenAIServer
) -> None:
    model_server.enqueue(
        Reply(body=completion_body("Kilimanjaro."), delay_s=MODEL_DELAY_S)
    )

    responses = await route_all(stub)

    answers = [r.answer for r in responses if isinstance(r, router_pb2.RouteResponse)]
    statuses = [r.cache_status for r in responses if not isinstance(r, Exception)]
    assert len(model_server.requests) == 1
    assert answers == ["Kilimanjaro."] * CONCURRENT_CALLS
    assert statuses.count(router_pb2.CACHE_STATUS_MISS) == 1
    assert statuses.count(router_pb2.CACHE_STATUS_SHARED) == CONCURRENT_CALLS - 1


async def test_failed_leader_leaves_no_follower_waiting(
    stub: router_pb2_grpc.RouterServiceStub, model_server: FakeOpenAIServer
) -> None:
    # 400 is never retried, and the chain has no other model, so the first
    # request fails; a follower then makes the one successful call.
    model_server.enqueue(
        Reply(status=400, body={"error": "bad"}, delay_s=MODEL_DELAY_S),
        Reply(body=completion_body("Kilimanjaro."), delay_s=MODEL_DELAY_S),
    )

    responses = await route_all(stub)

    failures = [r for r in responses if isinstance(r, grpc.aio.AioRpcError)]
    answers = [r.answer for r in responses if isinstance(r, router_pb2.RouteResponse)]
    assert len(model_server.requests) == 2
    assert len(failures) == 1
    assert failures[0].code() is grpc.StatusCode.UNAVAILABLE
    assert answers == ["Kilimanjaro."] * (CONCURRENT_CALLS - 1)
