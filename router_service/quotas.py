"""Rate limits and daily budgets per tenant and per user, with `limits`.

Request limits are checked and counted in one atomic `hit`, so concurrent
requests never pass a limit together. Token limits are checked before a
request (is any room left this minute?) and charged after it with the tokens
that were used, because the count is only known then. Budgets compare the
ledger's spend since 00:00 UTC with the configured amount. Storage is in
memory by default; a Redis URI lets several router replicas share the counters.

Rate limits fail open: when the Redis store does not reply, requests are admitted
without rate limits, each such request is counted through `on_store_error`, and
at most one WARNING per STORE_WARNING_INTERVAL_S logs the error. After an error
the limits skip Redis for STORE_RETRY_AFTER_S, so a hung Redis delays only the
request that found it hung, not every request. Budgets read the ledger, not
Redis, so they still apply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from limits import RateLimitItem, RateLimitItemPerMinute, parse
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError as StoreError
from limits.storage import storage_from_string

from cache_service.log_throttle import LogThrottle
from router_service.domain import RouteQuery
from router_service.errors import BudgetExceededError, ConfigError, RateLimitedError
from router_service.ledger import CostLedger
from router_service.settings import LimitSettings

logger = logging.getLogger(__name__)

# Seconds that one Redis connect or command may take before the store counts as
# down. Redis replies in well under a millisecond on a healthy network.
REDIS_TIMEOUT_S = 1.0
# At most one rate_limit_store_unavailable WARNING per this many seconds.
STORE_WARNING_INTERVAL_S = 60.0
# Seconds after a store error during which requests are admitted without rate
# limits and without a Redis command. Each command sent to a hung Redis waits up
# to REDIS_TIMEOUT_S, so without this pause every request would wait.
STORE_RETRY_AFTER_S = 5.0
FAIL_OPEN_POLICY = "requests are admitted without rate limits until Redis replies"


@dataclass(frozen=True)
class _SubjectLimits:
    """The limits of one kind of subject: "tenant" or "user"."""

    kind: str
    requests: RateLimitItem | None
    tokens: RateLimitItem | None
    budget_usd: float


def _subject_limits(
    kind: str, requests: str, tokens: int, budget: float
) -> _SubjectLimits:
    return _SubjectLimits(
        kind=kind,
        requests=parse(requests) if requests else None,
        tokens=RateLimitItemPerMinute(tokens) if tokens > 0 else None,
        budget_usd=budget,
    )


def _async_storage_uri(uri: str) -> str:
    return uri if uri.startswith("async+") else f"async+{uri}"


def _keys(kind: str, query: RouteQuery) -> tuple[str, ...]:
    return (query.tenant,) if kind == "tenant" else (query.tenant, query.user)


def _label(kind: str, query: RouteQuery) -> str:
    return f"tenant {query.tenant!r}" if kind == "tenant" else f"user {query.user!r}"


def _store_address(uri: str) -> str:
    """Return `uri` without credentials or options, such as redis://host:6379."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


class RequestQuotas:
    """Enforces the configured rate limits and daily budgets.

    User limits apply only to requests that name a user.
    """

    def __init__(
        self,
        settings: LimitSettings,
        ledger: CostLedger | None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic_clock: Callable[[], float] = time.monotonic,
        store_retry_after_s: float = STORE_RETRY_AFTER_S,
        on_store_error: Callable[[], None] | None = None,
    ) -> None:
        self._subjects = (
            _subject_limits(
                "tenant",
                settings.tenant_requests,
                settings.tenant_tokens_per_minute,
                settings.tenant_budget_usd_per_day,
            ),
            _subject_limits(
                "user",
                settings.user_requests,
                settings.user_tokens_per_minute,
                settings.user_budget_usd_per_day,
            ),
        )
        for subject in self._subjects:
            if subject.budget_usd > 0 and ledger is None:
                raise ConfigError(
                    f"limits.{subject.kind}_budget_usd_per_day needs the cost "
                    "ledger. Keep the ledger enabled or set the budget to 0."
                )
        self._ledger = ledger
        self._clock = clock
        self._on_store_error = on_store_error
        self._warnings = LogThrottle(STORE_WARNING_INTERVAL_S, clock)
        self._monotonic_clock = monotonic_clock
        self._store_retry_after_s = store_retry_after_s
        self._skip_store_until = float("-inf")
        # Redis calls that failed, not counting the requests admitted while the
        # store is skipped.
        self.store_errors = 0
        self.uses_redis = settings.storage_uri.startswith(("redis://", "rediss://"))
        self.store_address = _store_address(settings.storage_uri)
        options: dict[str, str | float | bool] = {}
        if self.uses_redis:
            # `limits` defaults to the coredis client; redis-py is what we install.
            # Wrapped errors are all limits.errors.StorageError, which fails open.
            options = {
                "implementation": "redispy",
                "wrap_exceptions": True,
                "socket_connect_timeout": REDIS_TIMEOUT_S,
                "socket_timeout": REDIS_TIMEOUT_S,
            }
        # An "async+" URI gives an asyncio storage, which the stubs do not know.
        self._storage = cast(
            AsyncStorage,
            storage_from_string(_async_storage_uri(settings.storage_uri), **options),
        )
        self._limiter = MovingWindowRateLimiter(self._storage)

    async def check_store(self) -> str | None:
        """Ping the counter store; return None when it replies, else the problem.

        While the store is skipped after an error, return the problem without a
        PING, so a hung Redis does not delay the Health RPC either.
        """
        if not self.uses_redis:
            return None
        if self._skipping_store():
            return (
                f"Redis at {self.store_address} failed less than "
                f"{self._store_retry_after_s} s ago"
            )
        if await self._storage.check():
            return None
        self._skip_store_until = self._monotonic_clock() + self._store_retry_after_s
        return (
            f"Redis at {self.store_address} did not reply to PING within "
            f"{REDIS_TIMEOUT_S} s"
        )

    def _skipping_store(self) -> bool:
        return self._monotonic_clock() < self._skip_store_until

    async def warn_if_store_unreachable(self) -> None:
        """Log one WARNING when the Redis store does not reply, as at startup."""
        problem = await self.check_store()
        if problem is not None:
            logger.warning(
                "rate_limit_store_unreachable",
                extra={
                    "error": problem,
                    "policy": FAIL_OPEN_POLICY,
                    "remedy": "start Redis or fix limits.storage_uri",
                },
            )

    def _store_failed(self, error: StoreError, *, admitted: bool) -> None:
        """Log a store error at most once a minute, and count it if it `admitted` one.

        The warning carries how many errors were not logged since the last one.
        Redis is skipped for the next `store_retry_after_s`.
        """
        self.store_errors += 1
        self._skip_store_until = self._monotonic_clock() + self._store_retry_after_s
        if admitted and self._on_store_error is not None:
            self._on_store_error()
        unlogged = self._warnings.admit()
        if unlogged is None:
            return
        cause = error.storage_error
        logger.warning(
            "rate_limit_store_unavailable",
            extra={
                "error": f"{type(cause).__name__}: {cause}",
                "storage": self.store_address,
                "policy": FAIL_OPEN_POLICY,
                "errors_since_last_warning": unlogged,
            },
        )

    def _applies(self, subject: _SubjectLimits, query: RouteQuery) -> bool:
        return subject.kind == "tenant" or bool(query.user)

    async def _retry_after_s(self, item: RateLimitItem, *keys: str) -> float:
        stats = await self._limiter.get_window_stats(item, *keys)
        return max(0.0, stats.reset_time - self._clock())

    async def admit(self, query: RouteQuery) -> None:
        """Count the request against its limits, or reject it.

        When the Redis store fails, the rate limits admit the request (see the
        module docstring); budgets still apply.

        Raises:
            RateLimitedError: a request or token limit is exhausted.
            BudgetExceededError: the tenant or user has spent its daily budget.
        """
        subjects = [s for s in self._subjects if self._applies(s, query)]
        for subject in subjects:
            self._check_budget(subject, query)
        rate_limited = any(s.requests or s.tokens for s in subjects)
        if rate_limited and self._skipping_store():
            if self._on_store_error is not None:
                self._on_store_error()
            return
        try:
            for subject in subjects:
                await self._check_tokens(subject, query)
            for subject in subjects:
                await self._hit_requests(subject, query)
        except StoreError as error:
            self._store_failed(error, admitted=True)

    def _check_budget(self, subject: _SubjectLimits, query: RouteQuery) -> None:
        if subject.budget_usd <= 0 or self._ledger is None:
            return
        user = query.user if subject.kind == "user" else None
        spent = self._ledger.spent_today(query.tenant, user)
        if spent >= subject.budget_usd:
            raise BudgetExceededError(
                f"{_label(subject.kind, query)} spent ${spent:.4f} of its daily "
                f"budget of ${subject.budget_usd:.4f}; the budget resets at "
                "00:00 UTC"
            )

    async def _check_tokens(self, subject: _SubjectLimits, query: RouteQuery) -> None:
        if subject.tokens is None:
            return
        keys = ("tokens", *_keys(subject.kind, query))
        if await self._limiter.test(subject.tokens, *keys):
            return
        retry_after = await self._retry_after_s(subject.tokens, *keys)
        raise RateLimitedError(
            f"{_label(subject.kind, query)} used its {subject.tokens.amount} tokens "
            f"per minute; retry after {retry_after:.1f} s",
            retry_after,
        )

    async def _hit_requests(self, subject: _SubjectLimits, query: RouteQuery) -> None:
        if subject.requests is None:
            return
        keys = ("requests", *_keys(subject.kind, query))
        if await self._limiter.hit(subject.requests, *keys):
            return
        retry_after = await self._retry_after_s(subject.requests, *keys)
        raise RateLimitedError(
            f"{_label(subject.kind, query)} exceeded its limit of "
            f"{subject.requests}; retry after {retry_after:.1f} s",
            retry_after,
        )

    async def charge_tokens(self, query: RouteQuery, tokens: int) -> None:
        """Count `tokens` against the token limits of the request's tenant and user.

        A window cannot hold more than its limit, so tokens beyond the room
        left fill the window and are not carried over.
        """
        if tokens <= 0 or self._skipping_store():
            return
        try:
            await self._charge_subjects(query, tokens)
        except StoreError as error:
            # The request was already served; only its token count is lost.
            self._store_failed(error, admitted=False)

    async def _charge_subjects(self, query: RouteQuery, tokens: int) -> None:
        for subject in self._subjects:
            if subject.tokens is None or not self._applies(subject, query):
                continue
            keys = ("tokens", *_keys(subject.kind, query))
            stats = await self._limiter.get_window_stats(subject.tokens, *keys)
            cost = min(tokens, stats.remaining)
            if cost > 0:
                await self._limiter.hit(subject.tokens, *keys, cost=cost)
