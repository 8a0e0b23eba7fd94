"""Tests of the rate limits when their Redis store hangs instead of refusing.

A real redis-server is paused with SIGSTOP, so commands time out rather than
fail at once. The limits must then skip Redis for a while instead of making
every request wait for the timeout.
"""

from __future__ import annotations

import os
import signal

import pytest
import redis

from router_service.domain import RouteQuery
from router_service.errors import RateLimitedError
from router_service.quotas import RequestQuotas
from router_service.settings import LimitSettings

pytestmark = pytest.mark.anyio

RETRY_AFTER_S = 5.0
REQUESTS_WHILE_HUNG = 5


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _redis_pid(uri: str) -> int:
    client = redis.Redis.from_url(uri)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def _quotas(uri: str, clock: FakeClock, admitted: list[int]) -> RequestQuotas:
    settings = LimitSettings(
        tenant_requests="2/minute", tenant_tokens_per_minute=100_000, storage_uri=uri
    )
    return RequestQuotas(
        settings,
        None,
        monotonic_clock=clock,
        store_retry_after_s=RETRY_AFTER_S,
        on_store_error=lambda: admitted.append(1),
    )


async def test_hung_redis_is_skipped_then_retried(redis_uri: str) -> None:
    clock = FakeClock()
    admitted_without_limits: list[int] = []
    quotas = _quotas(redis_uri, clock, admitted_without_limits)
    pid = _redis_pid(redis_uri)

    os.kill(pid, signal.SIGSTOP)
    try:
        await quotas.admit(RouteQuery(query="hi", tenant="acme"))
        errors_after_first = quotas.store_errors
        for _ in range(REQUESTS_WHILE_HUNG):
            request = RouteQuery(query="hi", tenant="acme")
            await quotas.admit(request)
            await quotas.charge_tokens(request, 10)
        health_problem = await quotas.check_store()
    finally:
        os.kill(pid, signal.SIGCONT)

    assert errors_after_first == 1
    assert quotas.store_errors == 1
    assert len(admitted_without_limits) == 1 + REQUESTS_WHILE_HUNG
    assert health_problem is not None

    clock.now += RETRY_AFTER_S
    # A new tenant: Redis may still run the command that timed out for "acme".
    fresh = RouteQuery(query="hi", tenant="beta")
    await quotas.admit(fresh)
    await quotas.admit(fresh)
    with pytest.raises(RateLimitedError):
        await quotas.admit(fresh)
    assert quotas.store_errors == 1
    assert await quotas.check_store() is None
