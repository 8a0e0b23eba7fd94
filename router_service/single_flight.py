"""Single-flight: concurrent identical cache misses share one model call.

The first request for a key (the leader) makes the call. Requests with the same
key that arrive while it runs (followers) wait for the leader's result instead
of calling the model again. A follower waits at most until its own wait limit,
then calls the model itself. When the leader fails or is cancelled, one waiting
follower takes over and makes the call, so no follower inherits another
caller's error or waits on a call that will never finish.

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

from cache_service.normalize import normalize_query
from router_service.domain import CacheScope, RouteQuery

logger = logging.getLogger(__name__)
T = TypeVar("T")


class _LeaderFailed:
    """Result of a flight whose leader raised or was cancelled."""


_LEADER_FAILED = _LeaderFailed()


def flight_key(query: RouteQuery, tier: str) -> tuple[CacheScope, str, str]:
    """Return the key under which identical requests share a model call.

    Two requests share a call when their cache scope (tenant, pinned tier or
    "auto", system prompt, earlier turns, temperature, max_tokens), their tier
    and their query text after the cache's exact-layer normalization match.
    """
    return (query.cache_scope(), tier, normalize_query(query.query))


class SingleFlight(Generic[T]):
    """Shares one running computation per key among its concurrent callers."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._flights: dict[Hashable, asyncio.Future[T | _LeaderFailed]] = {}

    def in_flight(self) -> int:
        """Return the number of keys whose computation is running."""
        return len(self._flights)

    async def run(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[T]],
        wait_until: float | None,
    ) -> tuple[T, bool]:
        """Return the value for `key` and whether another caller computed it.

        `wait_until` is the `clock` time after which a follower stops waiting
        and calls `compute` itself; None waits for as long as the leader runs.
        Raises whatever `compute` raises when this caller runs it.
        """
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, compute), False

            remaining = None if wait_until is None else wait_until - self._clock()
            if remaining is not None and remaining <= 0:
                logger.warning("single_flight_wait_expired")
                return await compute(), False
            try:
                # shield: a follower's timeout or cancellation must not cancel
                # the flight that the leader and other followers share.
                value = await asyncio.wait_for(asyncio.shield(flight), remaining)
            except TimeoutError:
                logger.warning("single_flight_wait_expired")
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
