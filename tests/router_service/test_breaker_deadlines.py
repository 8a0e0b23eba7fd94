"""Tests that only the model's own timeout, not a caller's deadline, opens a breaker.

A real router on port 0 calls a simulator model that responds after 3 s. Callers
with short gRPC deadlines get DEADLINE_EXCEEDED, and the model stays healthy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.resilience import BreakerState
from router_service.server import RunningServer, create_server
from router_service.settings import ResilienceSettings
from router_service.testing import (
    FakeCache,
    FakeClassifier,
    model_for_tests,
    settings_for_tests,
)

pytestmark = pytest.mark.anyio

SLOW_LATENCY_MS = 3000
# Consecutive counted failures that open the breaker.
THRESHOLD = 2


async def _start_router(model_timeout_s: float) -> RunningServer:
    slow = model_for_tests(
        "slow-model", latency_ms=SLOW_LATENCY_MS, timeout_s=model_timeout_s
    )
    fast = model_for_tests("fast-model")
    settings = settings_for_tests(
        models={"slow-model": slow, "fast-model": fast},
        tiers={
            "simple": ("slow-model",),
            "medium": ("fast-model",),
            "complex": ("fast-model",),
        },
        resilience=ResilienceSettings(
            max_attempts=1,
            breaker_failure_threshold=THRESHOLD,
            breaker_cooldown_s=600.0,
        ),
    )
    return await create_server(settings, cache=FakeCache(), classifier=FakeClassifier())


@pytest.fixture
async def patient_model() -> AsyncIterator[RunningServer]:
    running = await _start_router(model_timeout_s=30.0)
    yield running
    await running.stop(grace_s=0.5)


@pytest.fixture
async def impatient_model() -> AsyncIterator[RunningServer]:
    running = await _start_router(model_timeout_s=0.2)
    yield running
    await running.stop(grace_s=0.5)


async def _route_simple(
    stub: router_pb2_grpc.RouterServiceStub, query: str, timeout_s: float
) -> router_pb2.RouteResponse:
    request = router_pb2.RouteRequest(
        query=query, tenant="acme", tier=router_pb2.TIER_SIMPLE
    )
    return await stub.Route(request, timeout=timeout_s)


async def _model_check(running: RunningServer, name: str) -> router_pb2.HealthCheck:
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        report = await stub.Health(router_pb2.HealthRequest(), timeout=30)
    return {check.name: check for check in report.checks}[f"model:{name}"]


async def test_caller_deadlines_leave_breaker_closed(
    patient_model: RunningServer,
) -> None:
    calls = 4 * THRESHOLD
    async with grpc.aio.insecure_channel(patient_model.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        outcomes = await asyncio.gather(
            *(_route_simple(stub, f"question {i}?", 0.5) for i in range(calls)),
            return_exceptions=True,
        )
    codes = [
        error.code() for error in outcomes if isinstance(error, grpc.aio.AioRpcError)
    ]
    check = await _model_check(patient_model, "slow-model")

    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * calls
    assert patient_model.router.breakers["slow-model"].state is BreakerState.CLOSED
    assert check.status == router_pb2.CHECK_STATUS_OK


async def test_model_timeout_still_opens_breaker(
    impatient_model: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(impatient_model.target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        for i in range(THRESHOLD):
            # The fast model of the next tier responds after the slow one times out.
            await _route_simple(stub, f"question {i}?", 30.0)
    check = await _model_check(impatient_model, "slow-model")

    assert impatient_model.router.breakers["slow-model"].state is BreakerState.OPEN
    assert check.status == router_pb2.CHECK_STATUS_FAILING
