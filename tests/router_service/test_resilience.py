"""Tests of retries with full jitter and of the per-model circuit breaker."""

from __future__ import annotations

import asyncio

import pytest

from router_service.errors import (
    CircuitOpenError,
    ModelConnectionError,
    ModelHTTPError,
    ModelResponseError,
    ModelTimeoutError,
)
from router_service.resilience import BreakerState, CircuitBreaker, call_with_retries
from router_service.settings import ResilienceSettings

pytestmark = pytest.mark.anyio


class FakeTime:
    """A monotonic clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FlakyCall:
    """Raises the scripted errors in order, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.timeouts: list[float] = []

    async def __call__(self, timeout_s: float) -> str:
        self.timeouts.append(timeout_s)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


SETTINGS = ResilienceSettings(max_attempts=4, backoff_initial_s=0.5, backoff_max_s=4.0)


@pytest.mark.parametrize(
    "error",
    [
        ModelTimeoutError("m", "slow"),
        ModelConnectionError("m", "refused"),
        ModelHTTPError("m", 429),
        ModelHTTPError("m", 503),
    ],
    ids=["timeout", "connection", "429", "503"],
)
async def test_retryable_error_is_retried(error: Exception) -> None:
    clock = FakeTime()
    call = FlakyCall(error, error)
    result = await call_with_retries(
        call, SETTINGS, None, clock=clock, sleep=clock.sleep
    )

    assert result == "ok"
    assert len(call.timeouts) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_error_is_not_retried(status: int) -> None:
    clock = FakeTime()
    call = FlakyCall(ModelHTTPError("m", status))
    with pytest.raises(ModelHTTPError):
        await call_with_retries(call, SETTINGS, None, clock=clock, sleep=clock.sleep)

    assert len(call.timeouts) == 1
    assert clock.sleeps == []


async def test_waits_use_full_jitter_within_cap() -> None:
    clock = FakeTime()
    call = FlakyCall(*(ModelHTTPError("m", 500) for _ in range(3)))
    await call_with_retries(call, SETTINGS, None, clock=clock, sleep=clock.sleep)

    assert len(clock.sleeps) == 3
    for attempt, slept in enumerate(clock.sleeps, start=1):
        assert 0.0 <= slept <= min(SETTINGS.backoff_max_s, 0.5 * 2**attempt)


async def test_retry_after_sets_the_wait() -> None:
    clock = FakeTime()
    call = FlakyCall(ModelHTTPError("m", 429, retry_after_s=2.5))
    await call_with_retries(call, SETTINGS, None, clock=clock, sleep=clock.sleep)

    assert clock.sleeps == [2.5]


async def test_retry_after_past_deadline_stops_retrying() -> None:
    clock = FakeTime()
    call = FlakyCall(ModelHTTPError("m", 429, retry_after_s=30.0))
    with pytest.raises(ModelHTTPError):
        await call_with_retries(
            call, SETTINGS, clock.now + 5.0, clock=clock, sleep=clock.sleep
        )

    assert len(call.timeouts) == 1
    assert clock.sleeps == []


async def test_attempt_timeout_is_capped_by_deadline() -> None:
    clock = FakeTime()
    call = FlakyCall()
    await call_with_retries(
        call, SETTINGS, clock.now + 1.5, clock=clock, sleep=clock.sleep
    )

    assert call.timeouts == [1.5]


async def test_gives_up_after_max_attempts() -> None:
    clock = FakeTime()
    call = FlakyCall(*(ModelHTTPError("m", 502) for _ in range(10)))
    with pytest.raises(ModelHTTPError):
        await call_with_retries(call, SETTINGS, None, clock=clock, sleep=clock.sleep)

    assert len(call.timeouts) == SETTINGS.max_attempts


def make_breaker(
    clock: FakeTime, changes: list[BreakerState] | None = None
) -> CircuitBreaker:
    def record(model: str, state: BreakerState) -> None:
        if changes is not None:
            changes.append(state)

    return CircuitBreaker("m", 3, 60.0, 1, clock=clock, on_change=record)


async def fail_through(breaker: CircuitBreaker, error: Exception) -> None:
    with pytest.raises(type(error)):
        async with breaker.guard():
            raise error


async def test_breaker_opens_after_consecutive_failures() -> None:
    clock = FakeTime()
    breaker = make_breaker(clock)
    for _ in range(3):
        await fail_through(breaker, ModelHTTPError("m", 500))

    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        async with breaker.guard():
            pass


async def test_breaker_success_resets_failure_count() -> None:
    breaker = make_breaker(FakeTime())
    for _ in range(2):
        await fail_through(breaker, ModelHTTPError("m", 500))
    async with breaker.guard():
        pass
    for _ in range(2):
        await fail_through(breaker, ModelHTTPError("m", 500))

    assert breaker.state is BreakerState.CLOSED


async def test_breaker_ignores_client_errors() -> None:
    breaker = make_breaker(FakeTime())
    for _ in range(5):
        await fail_through(breaker, ModelHTTPError("m", 400))

    assert breaker.state is BreakerState.CLOSED


async def test_breaker_counts_invalid_responses() -> None:
    breaker = make_breaker(FakeTime())
    for _ in range(3):
        await fail_through(breaker, ModelResponseError("m", "bad json"))

    assert breaker.state is BreakerState.OPEN


async def test_breaker_half_opens_after_cooldown_and_closes_on_success() -> None:
    clock = FakeTime()
    changes: list[BreakerState] = []
    breaker = make_breaker(clock, changes)
    for _ in range(3):
        await fail_through(breaker, ModelHTTPError("m", 500))
    clock.now += 60.0

    assert breaker.state is BreakerState.HALF_OPEN
    async with breaker.guard():
        pass
    assert breaker.state is BreakerState.CLOSED
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


async def test_breaker_reopens_when_probe_fails() -> None:
    clock = FakeTime()
    breaker = make_breaker(clock)
    for _ in range(3):
        await fail_through(breaker, ModelHTTPError("m", 500))
    clock.now += 60.0
    await fail_through(breaker, ModelTimeoutError("m", "slow"))

    assert breaker.state is BreakerState.OPEN
    clock.now += 59.0
    assert breaker.state is BreakerState.OPEN


async def test_half_open_limits_concurrent_probes() -> None:
    clock = FakeTime()
    breaker = make_breaker(clock)
    for _ in range(3):
        await fail_through(breaker, ModelHTTPError("m", 500))
    clock.now += 60.0
    probe_started = asyncio.Event()
    release = asyncio.Event()

    async def probe() -> None:
        async with breaker.guard():
            probe_started.set()
            await release.wait()

    task = asyncio.create_task(probe())
    await probe_started.wait()
    with pytest.raises(CircuitOpenError, match="half-open"):
        async with breaker.guard():
            pass
    release.set()
    await task
    assert breaker.state is BreakerState.CLOSED


async def test_cancelled_probe_frees_its_slot() -> None:
    clock = FakeTime()
    breaker = make_breaker(clock)
    for _ in range(3):
        await fail_through(breaker, ModelHTTPError("m", 500))
    clock.now += 60.0
    probe_started = asyncio.Event()

    async def probe() -> None:
        async with breaker.guard():
            probe_started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(probe())
    await probe_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert breaker.state is BreakerState.HALF_OPEN
    async with breaker.guard():
        pass
    assert breaker.state is BreakerState.CLOSED
