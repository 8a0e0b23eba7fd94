"""Tests of rate limits and daily budgets."""

from __future__ import annotations

import asyncio

import pytest

from router_service.domain import RouteQuery
from router_service.errors import BudgetExceededError, ConfigError, RateLimitedError
from router_service.ledger import CostLedger, LedgerEntry
from router_service.quotas import RequestQuotas
from router_service.settings import LimitSettings

pytestmark = pytest.mark.anyio


def query(tenant: str = "acme", user: str = "") -> RouteQuery:
    return RouteQuery(query="hi", tenant=tenant, user=user)


async def admitted(quotas: RequestQuotas, request: RouteQuery) -> bool:
    try:
        await quotas.admit(request)
    except RateLimitedError:
        return False
    return True


async def test_concurrent_requests_pass_exactly_the_limit() -> None:
    quotas = RequestQuotas(LimitSettings(tenant_requests="10/minute"), None)
    results = await asyncio.gather(*(admitted(quotas, query()) for _ in range(100)))

    assert sum(results) == 10


async def test_rate_limited_error_carries_retry_time() -> None:
    quotas = RequestQuotas(LimitSettings(tenant_requests="1/minute"), None)
    await quotas.admit(query())
    with pytest.raises(RateLimitedError, match="retry after") as caught:
        await quotas.admit(query())

    assert 0 < caught.value.retry_after_s <= 60


async def test_tenants_have_separate_request_limits() -> None:
    quotas = RequestQuotas(LimitSettings(tenant_requests="1/minute"), None)

    assert await admitted(quotas, query("a"))
    assert await admitted(quotas, query("b"))
    assert not await admitted(quotas, query("a"))


async def test_user_limit_applies_per_user() -> None:
    quotas = RequestQuotas(LimitSettings(user_requests="2/minute"), None)
    for _ in range(2):
        assert await admitted(quotas, query(user="alice"))

    assert not await admitted(quotas, query(user="alice"))
    assert await admitted(quotas, query(user="bob"))


async def test_token_limit_blocks_after_tokens_used() -> None:
    quotas = RequestQuotas(LimitSettings(tenant_tokens_per_minute=100), None)
    await quotas.admit(query())
    await quotas.charge_tokens(query(), 60)

    assert await admitted(quotas, query())
    await quotas.charge_tokens(query(), 60)
    with pytest.raises(RateLimitedError, match="tokens per minute"):
        await quotas.admit(query())
    assert await admitted(quotas, query("other"))


def spend(ledger: CostLedger, tenant: str, cost: float) -> None:
    import time

    ledger.record(
        LedgerEntry(
            time.time(),
            "r1",
            tenant,
            "",
            "simple",
            "m",
            "miss",
            False,
            1,
            1,
            cost,
            1,
            1,
        )
    )


async def test_budget_rejects_after_daily_spend() -> None:
    ledger = CostLedger(None)
    quotas = RequestQuotas(LimitSettings(tenant_budget_usd_per_day=1.0), ledger)
    spend(ledger, "acme", 0.6)
    await quotas.admit(query())
    spend(ledger, "acme", 0.6)

    with pytest.raises(BudgetExceededError, match="daily budget"):
        await quotas.admit(query())
    await quotas.admit(query("other"))


def test_budget_without_ledger_is_rejected() -> None:
    with pytest.raises(ConfigError, match="tenant_budget_usd_per_day"):
        RequestQuotas(LimitSettings(tenant_budget_usd_per_day=1.0), None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tenant_requests": "lots"}, r"limits\.tenant_requests must be a rate"),
        ({"user_requests": "5 per fortnight"}, r"limits\.user_requests"),
        ({"tenant_tokens_per_minute": -1}, r"limits\.tenant_tokens_per_minute"),
        ({"storage_uri": "mongodb://x"}, r"limits\.storage_uri"),
    ],
)
def test_invalid_limit_settings_name_field(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        LimitSettings(**fields)  # type: ignore[arg-type]


async def test_user_token_limit_spares_other_users() -> None:
    quotas = RequestQuotas(LimitSettings(user_tokens_per_minute=50), None)
    await quotas.charge_tokens(query(user="alice"), 50)

    with pytest.raises(RateLimitedError, match="user 'alice' used its 50 tokens"):
        await quotas.admit(query(user="alice"))
    assert await admitted(quotas, query(user="bob"))


def spend_as(ledger: CostLedger, user: str, cost: float) -> None:
    import time

    ledger.record(
        LedgerEntry(
            time.time(),
            "r",
            "acme",
            user,
            "simple",
            "m",
            "miss",
            False,
            1,
            1,
            cost,
            1,
            1,
        )
    )


async def test_user_budget_rejects_only_that_user() -> None:
    ledger = CostLedger(None)
    quotas = RequestQuotas(LimitSettings(user_budget_usd_per_day=0.5), ledger)
    spend_as(ledger, "alice", 0.5)

    with pytest.raises(BudgetExceededError, match="user 'alice'"):
        await quotas.admit(query(user="alice"))
    await quotas.admit(query(user="bob"))
