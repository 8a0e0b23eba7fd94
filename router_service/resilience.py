"""Retries with full jitter inside a deadline, and a circuit breaker per model.

Single process only: breaker state lives in memory, so each router replica
trips its own breakers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from router_service.errors import (
    CircuitOpenError,
    ModelCallError,
    ModelResponseError,
    ModelTimeoutError,
)
from router_service.settings import ResilienceSettings

logger = logging.getLogger(__name__)
T = TypeVar("T")


class BreakerState(enum.IntEnum):
    """Circuit-breaker states; the values are exported as a metric."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Counts consecutive failures of one model and stops calling it when it is down.

    Closed: calls pass. After `failure_threshold` consecutive failures it opens
    and rejects calls for `cooldown_s`. Then it is half-open and lets up to
    `half_open_max_calls` probes through at a time: a success closes it and a
    failure opens it again. A probe that ends without a verdict (cancelled)
    frees its slot, so the breaker cannot stay half-open with no probe running.
    """

    def __init__(
        self,
        model: str,
        failure_threshold: int,
        cooldown_s: float,
        half_open_max_calls: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        self.model = model
        self._failure_threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0

    @property
    def state(self) -> BreakerState:
        """The current state, moving from open to half-open once the cooldown ends."""
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self._cooldown_s
        ):
            self._set_state(BreakerState.HALF_OPEN)
        return self._state

    def _set_state(self, state: BreakerState) -> None:
        if state is self._state:
            return
        previous, self._state = self._state, state
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
        if state is not BreakerState.HALF_OPEN:
            self._probes_in_flight = 0
        log = logger.warning if state is BreakerState.OPEN else logger.info
        log(
            "breaker_state_changed",
            extra={"model": self.model, "from": previous.name, "to": state.name},
        )
        if self._on_change is not None:
            self._on_change(self.model, state)

    def _acquire(self) -> bool:
        state = self.state
        if state is BreakerState.OPEN:
            raise CircuitOpenError(self.model, "circuit breaker is open")
        if state is BreakerState.HALF_OPEN:
            if self._probes_in_flight >= self._half_open_max_calls:
                raise CircuitOpenError(self.model, "circuit breaker is half-open")
            self._probes_in_flight += 1
            return True
        return False

    def record_success(self) -> None:
        """Close the breaker and reset the failure count."""
        self._failures = 0
        self._set_state(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """Count a failure; open the breaker at the threshold or on a failed probe."""
        self._failures += 1
        if (
            self._state is BreakerState.HALF_OPEN
            or self._failures >= self._failure_threshold
        ):
            self._set_state(BreakerState.OPEN)

    @contextlib.asynccontextmanager
    async def guard(self, *, deadline_clipped: bool = False) -> AsyncIterator[None]:
        """Wrap one call: reject it when open, record its outcome otherwise.

        Only failures that say the model is unhealthy (retryable ones and
        invalid responses) count; a 4xx caused by the request does not. Set
        `deadline_clipped` when the caller's deadline cut the call's timeout
        below the model's own `timeout_s`: a timeout then records no outcome,
        like a call that the caller cancelled.

        Raises:
            CircuitOpenError: the breaker is open or has no free probe slot.
        """
        is_probe = self._acquire()
        try:
            yield
        except ModelCallError as error:
            if _counts_against_model(error, deadline_clipped):
                self.record_failure()
            raise
        else:
            self.record_success()
        finally:
            if is_probe and self._state is BreakerState.HALF_OPEN:
                self._probes_in_flight = max(0, self._probes_in_flight - 1)


def _counts_against_model(error: ModelCallError, deadline_clipped: bool) -> bool:
    if deadline_clipped and isinstance(error, ModelTimeoutError):
        # The caller's short deadline, not a slow model, ended this call.
        return False
    return error.retryable or isinstance(error, ModelResponseError)


async def call_with_retries(
    attempt: Callable[[float], Awaitable[T]],
    settings: ResilienceSettings,
    deadline: float | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    on_failed_attempt: Callable[[ModelCallError], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Call `attempt(timeout_s)` until it succeeds, retrying only retryable errors.

    The wait before attempt n is a random time in [0, backoff_initial_s * 2**n]
    capped at backoff_max_s (full jitter), or the server's Retry-After when it
    sent one. No retry starts when the wait would end past `deadline` (a
    `time.monotonic()` value); the last error is raised instead.

    Raises:
        ModelCallError: the last attempt's error.
    """
    jitter = wait_random_exponential(
        multiplier=settings.backoff_initial_s, max=settings.backoff_max_s
    )

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after_s", None)
        if retry_after is not None:
            return float(retry_after)
        return float(jitter(state))

    class OutOfTime(stop_base):
        # Runs after tenacity computed the next wait, so upcoming_sleep is set.
        def __call__(self, state: RetryCallState) -> bool:
            return deadline is not None and clock() + state.upcoming_sleep >= deadline

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning(
            "model_call_retry",
            extra={
                "model": getattr(error, "model", ""),
                "attempt": state.attempt_number,
                "error": type(error).__name__,
                "sleep_s": round(state.upcoming_sleep, 3),
            },
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(settings.max_attempts) | OutOfTime(),
        wait=wait,
        retry=retry_if_exception(
            lambda e: isinstance(e, ModelCallError) and e.retryable
        ),
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep,
    )
    async for attempt_state in retrying:
        with attempt_state:
            try:
                return await attempt(_remaining(deadline, clock))
            except ModelCallError as error:
                if on_failed_attempt is not None:
                    on_failed_attempt(error)
                raise
    raise AssertionError("unreachable: tenacity reraises the last error")


def _remaining(deadline: float | None, clock: Callable[[], float]) -> float:
    if deadline is None:
        return float("inf")
    return max(0.0, deadline - clock())
