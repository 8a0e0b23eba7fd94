"""Retries, Retry-After and fallback from the gRPC router to a scripted model."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from fake_openai_server import FakeOpenAIServer, Reply, completion_body
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.server import RunningServer, create_server
from router_service.settings import ResilienceSettings
from router_service.testing import (
    FakeCache,
    FakeClassifier,
    model_for_tests,
    settings_for_tests,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def router_stub(
    fake_openai: FakeOpenAIServer,
) -> AsyncIterator[router_pb2_grpc.RouterServiceStub]:
    """A router whose simple tier calls the scripted server, then a simulator."""
    models = {
        "remote": model_for_tests(
            "remote", backend="openai", base_url=fake_openai.base_url, timeout_s=0.5
        ),
        "spare": model_for_tests("spare"),
        "big": model_for_tests("big"),
    }
    settings = settings_for_tests(
        models=models,
        tiers={
            "simple": ("remote", "spare"),
            "medium": ("spare",),
            "complex": ("big",),
        },
        resilience=ResilienceSettings(
            max_attempts=3, backoff_initial_s=0.001, backoff_max_s=0.01
        ),
    )
    running: RunningServer = await create_server(
        settings, cache=FakeCache(), classifier=FakeClassifier()
    )
    async with grpc.aio.insecure_channel(running.target) as channel:
        yield router_pb2_grpc.RouterServiceStub(channel)
    await running.stop(grace_s=0.5)


REQUEST = router_pb2.RouteRequest(query="What is the capital of France?", tenant="a")


async def test_retry_after_is_honoured_then_answer(
    router_stub: router_pb2_grpc.RouterServiceStub, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.enqueue(Reply(status=429, body={}, headers={"Retry-After": "0.05"}))
    response = await router_stub.Route(REQUEST, timeout=10)

    assert response.answer == "Paris."
    assert response.model == "remote"
    assert len(fake_openai.requests) == 2


async def test_retry_after_past_deadline_falls_back(
    router_stub: router_pb2_grpc.RouterServiceStub, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.enqueue(Reply(status=429, body={}, headers={"Retry-After": "600"}))
    response = await router_stub.Route(REQUEST, timeout=10)

    assert response.model == "spare"
    assert len(fake_openai.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_error_is_not_retried(
    router_stub: router_pb2_grpc.RouterServiceStub,
    fake_openai: FakeOpenAIServer,
    status: int,
) -> None:
    fake_openai.enqueue(Reply(status=status, body={"error": "no"}))
    response = await router_stub.Route(REQUEST, timeout=10)

    assert len(fake_openai.requests) == 1
    assert response.model == "spare"


async def test_server_errors_retry_then_fall_back(
    router_stub: router_pb2_grpc.RouterServiceStub, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.enqueue(*(Reply(status=502, body={}) for _ in range(3)))
    response = await router_stub.Route(REQUEST, timeout=10)

    assert len(fake_openai.requests) == 3
    assert response.model == "spare"
    assert "simulated" in response.answer


async def test_hanging_model_times_out_then_falls_back(
    router_stub: router_pb2_grpc.RouterServiceStub, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.enqueue(*(Reply(hang=True) for _ in range(3)))
    response = await router_stub.Route(REQUEST, timeout=30)

    assert response.model == "spare"


async def test_content_refusal_is_failed_precondition(
    router_stub: router_pb2_grpc.RouterServiceStub, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.enqueue(Reply(body=completion_body("", finish_reason="content_filter")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await router_stub.Route(REQUEST, timeout=10)

    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert len(fake_openai.requests) == 1
