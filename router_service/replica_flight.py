"""Single-flight across router replicas through Redis.

`SingleFlight` shares a model call among the requests of one router process.
This layer runs inside that process's leader and shares the call with the
other replicas that use the same Redis server:

1. The leader takes a lease: `SET <prefix>:<digest> lead:<token> NX PX <lease>`.
   It renews the lease while the model runs, so a replica that crashes
   mid-call frees the key within one lease instead of at the wait limit.
2. The lease holder calls the model and stores the answer in the cache, then
   one Lua script replaces its lease by the outcome and PUBLISHes the outcome
   on `<key>:outcome`. A stored answer stays in the key for a few seconds
   (`stored:<entry id>`), so a request that missed the cache just before the
   store reads the outcome at once. Any other outcome deletes the key.
3. Every other replica subscribes to the channel, then reads the key, which
   closes the race with a leader that finished in between. It waits for the
   message until its own wait limit. On `stored` it reads the answer from the
   cache (exact layer only). On `unstored` (an empty or cut-off answer) it
   calls the model itself. When the leader failed, or its lease expired, the
   waiting replicas compete for a new lease, so one of them makes the call.

Redis never decides whether a request succeeds: any Redis error makes the
request call the model itself, logs `single_flight_redis_unavailable` at
most once per `warn_interval_s`, and skips Redis for `retry_after_s`.

Key names carry a SHA-256 digest of the flight key, never the prompt text.
NOTE: the digest is not keyed, so whoever can read Redis can confirm a
guessed prompt while its flight runs, and for a few seconds afterwards.
Each waiting replica holds one Redis connection per key it waits on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, Generic, TypeVar

import redis.asyncio
from redis.exceptions import RedisError

from cache_service.log_throttle import LogThrottle
from router_service.domain import RouteQuery
from router_service.single_flight import (
    WAIT_LOG_INTERVAL_S,
    WaitExpiredLog,
    ends_at_deadline,
    flight_key,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
H = TypeVar("H")

KEY_PREFIX = "querygate:single_flight:v1"
# Bounds what an unreachable Redis adds to a request (connect and each command).
REDIS_TIMEOUT_S = 0.5

_STORED = "stored:"
_UNSTORED = "unstored"
_FAILED = "failed"
_GONE = "gone"
_WAIT_EXPIRED = "wait_expired"

# KEYS: flight key, channel. ARGV: lease value, outcome, ms to keep a stored outcome.
_FINISH_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if string.sub(ARGV[2], 1, 7) == 'stored:' then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  else
    redis.call('DEL', KEYS[1])
  end
end
return redis.call('PUBLISH', KEYS[2], ARGV[2])
"""

# KEYS: flight key. ARGV: lease value, lease ms.
_RENEW_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def flight_digest(query: RouteQuery, tier: str) -> str:
    """Return the SHA-256 hex digest of the request's single-flight key.

    Replicas of the same version compute the same digest for requests that
    `flight_key` treats as identical.
    """
    scope, key_tier, text = flight_key(query, tier)
    document = json.dumps(
        [asdict(scope), key_tier, text], sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RedisSingleFlight(Generic[T, H]):
    """Shares one model call per flight digest among router replicas.

    `T` is the value the model call produces and `H` a cached answer that a
    waiting replica reads instead.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        clock: Callable[[], float] = time.monotonic,
        lease_s: float = 10.0,
        stored_outcome_ttl_s: float = 5.0,
        key_check_interval_s: float = 1.0,
        retry_after_s: float = 5.0,
        warn_interval_s: float = 30.0,
    ) -> None:
        self._client = client
        self._clock = clock
        self._lease_ms = max(1, int(lease_s * 1000))
        self._stored_ttl_ms = max(1, int(stored_outcome_ttl_s * 1000))
        self._check_interval_s = key_check_interval_s
        self._retry_after_s = retry_after_s
        self._finish = client.register_script(_FINISH_SCRIPT)
        self._renew = client.register_script(_RENEW_SCRIPT)
        self._skip_until = float("-inf")
        self._warnings = LogThrottle(warn_interval_s, clock)
        self._expired_log = WaitExpiredLog(WAIT_LOG_INTERVAL_S, clock)

    @classmethod
    def from_uri(cls, uri: str, **options: Any) -> RedisSingleFlight[T, H]:
        """Create a coordinator on a redis:// or rediss:// URI; connects lazily."""
        client = redis.asyncio.Redis.from_url(
            uri,
            decode_responses=True,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
        )
        return cls(client, **options)

    async def aclose(self) -> None:
        """Close the Redis connections."""
        await self._client.aclose()

    async def run(
        self,
        digest: str,
        compute: Callable[[], Awaitable[tuple[T, str]]],
        read_stored: Callable[[], Awaitable[H | None]],
        wait_until: float,
        deadline: float | None = None,
    ) -> tuple[T, str] | H:
        """Return `compute`'s result, or the answer another replica stored.

        `compute` calls the model and stores the answer; it returns the value
        and the cache entry id, "" when nothing was stored. `read_stored`
        returns the stored answer, or None when the cache has none. A waiting
        replica stops waiting at `wait_until` (`clock` time) or at the caller's
        `deadline`, whichever comes first, and calls `compute` itself. Raises
        whatever `compute` raises.
        """
        at_deadline = ends_at_deadline(wait_until, deadline)
        if at_deadline and deadline is not None:
            wait_until = deadline
        key = f"{KEY_PREFIX}:{digest}"
        while self._clock() >= self._skip_until:
            try:
                token = f"lead:{secrets.token_hex(8)}"
                if await self._client.set(key, token, nx=True, px=self._lease_ms):
                    return await self._lead(key, token, compute)
                outcome = await self._follow(key, wait_until)
            except (RedisError, OSError) as error:
                self._redis_failed(error)
                break

            if outcome.startswith(_STORED) or outcome == _GONE:
                shared = await read_stored()
                if shared is not None:
                    return shared
            if outcome in (_FAILED, _GONE) and self._clock() < wait_until:
                continue  # compete for a new lease
            if outcome == _WAIT_EXPIRED:
                self._expired_log.record(at_deadline, "replicas")
            break
        return await compute()

    async def _lead(
        self,
        key: str,
        token: str,
        compute: Callable[[], Awaitable[tuple[T, str]]],
    ) -> tuple[T, str]:
        renewal = asyncio.create_task(self._renew_lease(key, token))
        try:
            value, entry_id = await compute()
        except BaseException:
            renewal.cancel()
            await self._publish(key, token, _FAILED)
            raise
        renewal.cancel()
        await self._publish(
            key, token, f"{_STORED}{entry_id}" if entry_id else _UNSTORED
        )
        return value, entry_id

    async def _renew_lease(self, key: str, token: str) -> None:
        interval_s = self._lease_ms / 3000
        while True:
            await asyncio.sleep(interval_s)
            try:
                if not await self._renew(keys=[key], args=[token, self._lease_ms]):
                    return  # the lease expired and another replica may lead
            except (RedisError, OSError) as error:
                self._redis_failed(error)
                return

    async def _publish(self, key: str, token: str, outcome: str) -> None:
        try:
            await self._finish(
                keys=[key, f"{key}:outcome"],
                args=[token, outcome, self._stored_ttl_ms],
            )
        except (RedisError, OSError) as error:
            # Waiting replicas notice when the lease expires.
            self._redis_failed(error)

    async def _follow(self, key: str, wait_until: float) -> str:
        """Wait for the outcome of the flight that owns `key`.

        Returns a published outcome, `_GONE` when the key disappeared without
        a message reaching us, or `_WAIT_EXPIRED` at `wait_until`.
        """
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(f"{key}:outcome")
            while True:
                # Read the key after subscribing, so that an outcome published
                # before the subscription is not missed.
                value = await self._client.get(key)
                if value is None:
                    return _GONE
                if _text(value).startswith(_STORED):
                    return _text(value)
                remaining_s = wait_until - self._clock()
                if remaining_s <= 0:
                    return _WAIT_EXPIRED
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True,
                    timeout=min(remaining_s, self._check_interval_s),
                )
                if message is not None:
                    return _text(message["data"])
        finally:
            await pubsub.aclose()

    def _redis_failed(self, error: BaseException) -> None:
        """Skip Redis for a while and log the error, at most once per interval."""
        self._skip_until = self._clock() + self._retry_after_s
        suppressed = self._warnings.admit()
        if suppressed is None:
            return
        logger.warning(
            "single_flight_redis_unavailable",
            extra={
                "error": f"{type(error).__name__}: {error}",
                "suppressed": suppressed,
                "retry_after_s": self._retry_after_s,
            },
        )
