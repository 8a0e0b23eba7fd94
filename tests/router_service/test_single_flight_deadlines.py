"""Tests of the single-flight log when callers' deadlines end their wait.

A real router on port 0 calls a simulator model that responds after 3 s. One
request leads the call, and followers with short gRPC deadlines stop waiting
at their deadline, which is the caller's choice and not a slow leader.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.server import create_server
from router_service.settings import CacheSettings
from router_service.testing import (
    FakeCache,
    FakeClassifier,
    model_for_tests,
    settings_for_tests,
)

pytestmark = pytest.mark.anyio

SLOW_LATENCY_MS = 3000
FOLLOWERS = 5
FOLLOWER_DEADLINE_S = 0.5
# Time for the leader's request to reach the model before the followers start.
LEADER_START_S = 0.5


def _wait_expired_lines(
    caplog: pytest.LogCaptureFixture, level: int
) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.getMessage() == "single_flight_wait_expired"
        and record.levelno == level
    ]


async def test_short_deadlines_log_no_wait_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = model_for_tests("slow-model", latency_ms=SLOW_LATENCY_MS)
    settings = settings_for_tests(
        models={"slow-model": slow},
        tiers={tier: ("slow-model",) for tier in ("simple", "medium", "complex")},
        cache=CacheSettings(single_flight_wait_s=30.0),
    )
    running = await create_server(
        settings, cache=FakeCache(), classifier=FakeClassifier()
    )
    request = router_pb2.RouteRequest(query="What is DNS?", tenant="acme")
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            with caplog.at_level(logging.INFO, logger="router_service.single_flight"):
                leader = asyncio.ensure_future(stub.Route(request, timeout=30))
                await asyncio.sleep(LEADER_START_S)
                followers = await asyncio.gather(
                    *(
                        stub.Route(request, timeout=FOLLOWER_DEADLINE_S)
                        for _ in range(FOLLOWERS)
                    ),
                    return_exceptions=True,
                )
                answer = await leader
    finally:
        await running.stop(grace_s=0.5)

    assert answer.answer
    for outcome in followers:
        assert isinstance(outcome, grpc.aio.AioRpcError)
        assert outcome.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _wait_expired_lines(caplog, logging.WARNING) == []
    [info] = _wait_expired_lines(caplog, logging.INFO)
    assert info.ended_by == "deadline"  # type: ignore[attr-defined]
