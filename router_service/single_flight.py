"""Single-flight: concurrent identical cache misses share one model call.

The first request for a key (the leader) makes the call. Requests with the same
key that arrive while it runs (followers) wait for the leader's result instead
of calling the model again. A follower waits at most until its wait limit or
its caller's deadline, whichever comes first, then calls the model itself. When
the leader fails or is cancelled, one waiting follower takes over and makes the
call, so no follower inherits another caller's error or waits on a call that
will never finish.

A wait that ends at the wait limit is logged as a WARNING, because the leader
was slow, and one that ends at the deadline as INFO, because the caller's
deadline was short. Each kind is logged at most once per WAIT_LOG_INTERVAL_S
with the number of lines held back, so short deadlines cannot flood the log.

NOTE: a failure that repeats for every caller, such as a content refusal, still
costs one call per request, made one after another.

Flights live in one event loop of one router process. With a Redis server
configured, `router_service.replica_flight` also shares each leader's call with
the other router replicas.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from cache_service.log_throttle import LogThrottle
from cache_service.normalize import normalize_query
from router_service.domain import CacheScope, RouteQuery

logger = logging.getLogger(__name__)
T = TypeVar("T")

# At most one single_flight_wait_expired line of each kind per this many seconds.
WAIT_LOG_INTERVAL_S = 60.0


class _LeaderFailed:
    """Result of a flight whose leader raised or was cancelled."""


_LEADER_FAILED = _LeaderFailed()


def ends_at_deadline(wait_until: float | None, deadline: float | None) -> bool:
    """Return whether a wait limited by both ends at the caller's `deadline`."""
    return deadline is not None and (wait_until is None or deadline <= wait_until)


class WaitExpiredLog:
    """Logs `single_flight_wait_expired`, at most once per interval for each kind.

    A wait that ends at the wait limit is a WARNING and one that ends at the
    caller's deadline is INFO. Each line carries the number held back before it.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._wait_limit_lines = LogThrottle(interval_s, clock)
        self._deadline_lines = LogThrottle(interval_s, clock)

    def record(self, at_deadline: bool, flight: str) -> None:
        """Log that a follower of `flight` ("process" or "replicas") stopped waiting."""
        lines = self._deadline_lines if at_deadline else self._wait_limit_lines
        held_back = lines.admit()
        if held_back is None:
            return
        logger.log(
            logging.INFO if at_deadline else logging.WARNING,
            "single_flight_wait_expired",
            extra={
                "flight": flight,
                "ended_by": "deadline" if at_deadline else "wait_limit",
                "lines_held_back": held_back,
            },
        )


def flight_key(query: RouteQuery, tier: str) -> tuple[CacheScope, str, str]:
    """Return the key under which identical requests share a model call.

    Two requests share a call when their cache scope (tenant, pinned tier or
    "auto", system prompt, earlier turns, temperature, max_tokens), their tier
    and their query text after the cache's exact-layer normalization match.
    """
    return (query.cache_scope(), tier, normalize_query(query.query))


class SingleFlight(Generic[T]):
    """Shares one running computation per key among its concurrent callers."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        log_interval_s: float = WAIT_LOG_INTERVAL_S,
    ) -> None:
        self._clock = clock
        self._flights: dict[Hashable, asyncio.Future[T | _LeaderFailed]] = {}
        self._expired_log = WaitExpiredLog(log_interval_s, clock)

    def in_flight(self) -> int:
        """Return the number of keys whose computation is running."""
        return len(self._flights)

    async def run(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[T]],
        wait_until: float | None,
        deadline: float | None = None,
    ) -> tuple[T, bool]:
        """Return the value for `key` and whether another caller computed it.

        A follower stops waiting and calls `compute` itself at `wait_until`,
        the `clock` time when the wait limit ends, or at the caller's
        `deadline`, whichever comes first. None for both waits for as long as
        the leader runs. Raises whatever `compute` raises when this caller
        runs it.
        """
        at_deadline = ends_at_deadline(wait_until, deadline)
        stop_at = deadline if at_deadline else wait_until
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, compute), False

            remaining = None if stop_at is None else stop_at - self._clock()
            if remaining is not None and remaining <= 0:
                self._expired_log.record(at_deadline, "process")
                return await compute(), False
            try:
                # shield: a follower's timeout or cancellation must not cancel
                # the flight that the leader and other followers share.
                value = await asyncio.wait_for(asyncio.shield(flight), remaining)
            except TimeoutError:
                self._expired_log.record(at_deadline, "process")
                return await compute(), False
            if not isinstance(value, _LeaderFailed):
                return value, True
            # The leader failed: loop, so that one follower leads a new flight.

    async def _lead(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        flight: asyncio.Future[T | _LeaderFailed] = (
            asyncio.get_running_loop().create_future()
        )
        self._flights[key] = flight
        try:
            value = await compute()
        except BaseException:
            flight.set_result(_LEADER_FAILED)
            raise
        finally:
            del self._flights[key]
        flight.set_result(value)
        return value
