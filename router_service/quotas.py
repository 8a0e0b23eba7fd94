"""Rate limits and daily budgets per tenant and per user, with `limits`.

Request limits are checked and counted in one atomic `hit`, so concurrent
requests never pass a limit together. Token limits are checked before a
request (is any room left this minute?) and charged after it with the tokens
that were used, because the count is only known then. Storage is in memory
by default; a Redis URI lets several router replicas share the counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from limits import RateLimitItem, RateLimitItemPerMinute, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from router_service.domain import RouteQuery
from router_service.errors import BudgetExceededError, ConfigError, RateLimitedError
from router_service.ledger import CostLedger
from router_service.settings import LimitSettings


def parse_limit(value: str) -> RateLimitItem | None:
    """Parse a `limits` string such as "600/minute"; an empty string disables it.

    `LimitSettings` has already checked the syntax.
    """
    return parse(value) if value else None


def _async_storage_uri(uri: str) -> str:
    return uri if uri.startswith("async+") else f"async+{uri}"


class RequestQuotas:
    """Enforces the configured rate limits and daily budgets."""

    def __init__(
        self,
        settings: LimitSettings,
        ledger: CostLedger | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tenant_requests = parse_limit(settings.tenant_requests)
        self._user_requests = parse_limit(settings.user_requests)
        self._tenant_tokens = (
            RateLimitItemPerMinute(settings.tenant_tokens_per_minute)
            if settings.tenant_tokens_per_minute > 0
            else None
        )
        self._budget_usd = settings.tenant_budget_usd_per_day
        if self._budget_usd > 0 and ledger is None:
            raise ConfigError(
                "limits.tenant_budget_usd_per_day needs the cost ledger. "
                "Leave [ledger] enabled or set the budget to 0."
            )
        self._ledger = ledger
        self._clock = clock
        options = {}
        if settings.storage_uri.startswith(("redis://", "rediss://")):
            # `limits` defaults to the coredis client; redis-py is what we install.
            options["implementation"] = "redispy"
        storage = storage_from_string(
            _async_storage_uri(settings.storage_uri), **options
        )
        self._limiter = MovingWindowRateLimiter(storage)  # type: ignore[arg-type]

    async def _retry_after_s(self, item: RateLimitItem, *keys: str) -> float:
        stats = await self._limiter.get_window_stats(item, *keys)
        return max(0.0, stats.reset_time - self._clock())

    async def _hit_or_raise(self, item: RateLimitItem, what: str, *keys: str) -> None:
        if not await self._limiter.hit(item, "requests", *keys):
            retry_after = await self._retry_after_s(item, "requests", *keys)
            raise RateLimitedError(
                f"{what} exceeded its limit of {item}; retry after {retry_after:.1f} s",
                retry_after,
            )

    async def admit(self, query: RouteQuery) -> None:
        """Count the request against its limits, or reject it.

        Raises:
            RateLimitedError: a request or token limit is exhausted.
            BudgetExceededError: the tenant has spent its daily budget.
        """
        if self._budget_usd > 0 and self._ledger is not None:
            spent = self._ledger.spent_today(query.tenant)
            if spent >= self._budget_usd:
                raise BudgetExceededError(
                    f"tenant {query.tenant!r} spent ${spent:.4f} of its daily "
                    f"budget of ${self._budget_usd:.4f}; the budget resets at "
                    "00:00 UTC"
                )
        if self._tenant_tokens is not None and not await self._limiter.test(
            self._tenant_tokens, "tokens", query.tenant
        ):
            retry_after = await self._retry_after_s(
                self._tenant_tokens, "tokens", query.tenant
            )
            raise RateLimitedError(
                f"tenant {query.tenant!r} used its {self._tenant_tokens.amount} "
                f"tokens per minute; retry after {retry_after:.1f} s",
                retry_after,
            )
        if self._tenant_requests is not None:
            await self._hit_or_raise(
                self._tenant_requests, f"tenant {query.tenant!r}", query.tenant
            )
        if self._user_requests is not None and query.user:
            await self._hit_or_raise(
                self._user_requests,
                f"user {query.user!r}",
                query.tenant,
                query.user,
            )

    async def charge_tokens(self, tenant: str, tokens: int) -> None:
        """Count `tokens` against the tenant's token limit.

        A window cannot hold more than its limit, so tokens beyond the room
        left fill the window and are not carried over.
        """
        if self._tenant_tokens is None or tokens <= 0:
            return
        stats = await self._limiter.get_window_stats(
            self._tenant_tokens, "tokens", tenant
        )
        cost = min(tokens, stats.remaining)
        if cost > 0:
            await self._limiter.hit(self._tenant_tokens, "tokens", tenant, cost=cost)
