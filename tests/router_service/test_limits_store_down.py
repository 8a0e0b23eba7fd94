"""Tests of the rate limits' fail-open policy when their Redis store is down.

A real router on port 0 keeps its counters in a real Redis server, which the
test stops with SHUTDOWN.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest
import redis
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.server import RunningServer, create_server
from router_service.settings import LimitSettings
from router_service.testing import FakeCache, FakeClassifier, settings_for_tests

pytestmark = pytest.mark.anyio

ROUTES_WHILE_DOWN = 3


def _stop_redis(uri: str) -> None:
    client = redis.Redis.from_url(uri)
    try:
        client.shutdown(nosave=True)
    finally:
        client.close()


async def _start_router(redis_uri: str) -> RunningServer:
    # With a token limit each request also charges its tokens to Redis afterwards.
    limits = LimitSettings(
        tenant_requests="600/minute",
        tenant_tokens_per_minute=100_000,
        storage_uri=redis_uri,
    )
    return await create_server(
        settings_for_tests(limits=limits),
        cache=FakeCache(),
        classifier=FakeClassifier(),
    )


@pytest.fixture
async def router(redis_uri: str) -> AsyncIterator[RunningServer]:
    running = await _start_router(redis_uri)
    yield running
    await running.stop(grace_s=0.5)


async def _route(running: RunningServer) -> router_pb2.RouteResponse:
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        request = router_pb2.RouteRequest(query="What is DNS?", tenant="acme")
        return await stub.Route(request, timeout=30)


async def _limits_check(running: RunningServer) -> router_pb2.HealthCheck:
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        report = await stub.Health(router_pb2.HealthRequest(), timeout=30)
    return {check.name: check for check in report.checks}["limits_store"]


async def test_routes_fail_open_when_redis_stops(
    router: RunningServer, redis_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    await _route(router)
    healthy = await _limits_check(router)

    _stop_redis(redis_uri)
    with caplog.at_level(logging.WARNING, logger="router_service.quotas"):
        answers = [await _route(router) for _ in range(ROUTES_WHILE_DOWN)]
    down = await _limits_check(router)
    warnings = [
        r for r in caplog.records if r.message == "rate_limit_store_unavailable"
    ]
    counted = router.metrics.registry.get_sample_value(
        "querygate_router_limit_store_errors_total"
    )

    assert healthy.status == router_pb2.CHECK_STATUS_OK
    assert all(answer.answer for answer in answers)
    assert counted == ROUTES_WHILE_DOWN
    assert len(warnings) == 1
    assert "ConnectionError" in warnings[0].error  # type: ignore[attr-defined]
    assert down.status == router_pb2.CHECK_STATUS_FAILING
    assert not down.critical
    assert "admitted without rate limits" in down.detail


async def test_unreachable_redis_warns_at_startup(
    redis_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    _stop_redis(redis_uri)
    with caplog.at_level(logging.WARNING, logger="router_service.quotas"):
        running = await _start_router(redis_uri)
    try:
        answer = await _route(running)
    finally:
        await running.stop(grace_s=0.5)
    warnings = [
        r for r in caplog.records if r.message == "rate_limit_store_unreachable"
    ]

    assert answer.answer
    assert len(warnings) == 1
    assert redis_uri in warnings[0].error  # type: ignore[attr-defined]
    assert "admitted without rate limits" in warnings[0].policy  # type: ignore[attr-defined]
