"""Rate limits and daily budgets per tenant and per user, with `limits`.

Request limits are checked and counted in one atomic `hit`, so concurrent
requests never pass a limit together. Token limits are checked before a
request (is any room left this minute?) and charged after it with the tokens
that were used, because the count is only known then. Budgets compare the
ledger's spend since 00:00 UTC with the configured amount. Storage is in
memory by default; a Redis URI lets several router replicas share the counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerMinute, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from router_service.domain import RouteQuery
from router_service.errors import BudgetExceededError, ConfigError, RateLimitedError
from router_service.ledger import CostLedger
from router_service.settings import LimitSettings


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
        options = {}
        if settings.storage_uri.startswith(("redis://", "rediss://")):
            # `limits` defaults to the coredis client; redis-py is what we install.
            options["implementation"] = "redispy"
        storage = storage_from_string(
            _async_storage_uri(settings.storage_uri), **options
        )
        self._limiter = MovingWindowRateLimiter(storage)  # type: ignore[arg-type]

    def _applies(self, subject: _SubjectLimits, query: RouteQuery) -> bool:
        return subject.kind == "tenant" or bool(query.user)

    async def _retry_after_s(self, item: RateLimitItem, *keys: str) -> float:
        stats = await self._limiter.get_window_stats(item, *keys)
        return max(0.0, stats.reset_time - self._clock())

    async def admit(self, query: RouteQuery) -> None:
        """Count the request against its limits, or reject it.

        Raises:
            RateLimitedError: a request or token limit is exhausted.
            BudgetExceededError: the tenant or user has spent its daily budget.
        """
        subjects = [s for s in self._subjects if self._applies(s, query)]
        for subject in subjects:
            self._check_budget(subject, query)
        for subject in subjects:
            await self._check_tokens(subject, query)
        for subject in subjects:
            await self._hit_requests(subject, query)

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
        if tokens <= 0:
            return
        for subject in self._subjects:
            if subject.tokens is None or not self._applies(subject, query):
                continue
            keys = ("tokens", *_keys(subject.kind, query))
            stats = await self._limiter.get_window_stats(subject.tokens, *keys)
            cost = min(tokens, stats.remaining)
            if cost > 0:
                await self._limiter.hit(subject.tokens, *keys, cost=cost)
