"""Per-request bookkeeping: admission by quotas, then ledger, limits and metrics."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

from router_service.domain import RouteQuery, RouteResult
from router_service.errors import BudgetExceededError, RateLimitedError
from router_service.ledger import CostAlert, CostLedger, LedgerEntry
from router_service.metrics import RouterMetrics
from router_service.quotas import RequestQuotas

logger = logging.getLogger(__name__)


class RequestAccounting:
    """Admits requests against quotas and records every finished request."""

    def __init__(
        self,
        ledger: CostLedger | None,
        quotas: RequestQuotas | None,
        metrics: RouterMetrics | None,
    ) -> None:
        self.ledger = ledger
        self._quotas = quotas
        self._metrics = metrics
        self._cost_alert = None
        if ledger is not None:
            self._cost_alert = CostAlert(ledger, on_alert=self._count_alert)

    def _count_alert(self, today_usd: float, average_usd: float) -> None:
        if self._metrics is not None:
            self._metrics.cost_alerts.inc()

    async def admit(self, query: RouteQuery) -> None:
        """Reject the request when a rate limit or the daily budget is exhausted.

        Raises:
            RateLimitedError, BudgetExceededError: from `RequestQuotas.admit`.
        """
        if self._metrics is not None:
            self._metrics.see_caller(query.tenant, query.user)
        if self._quotas is None:
            return
        try:
            await self._quotas.admit(query)
        except RateLimitedError:
            if self._metrics is not None:
                self._metrics.count_rejection("rate_limit")
            raise
        except BudgetExceededError:
            if self._metrics is not None:
                self._metrics.count_rejection("budget")
            raise

    async def record(self, query: RouteQuery, result: RouteResult) -> None:
        """Write the ledger row, charge the token limit and update the metrics.

        A ledger write that fails is logged and does not fail the request,
        because the caller already has its answer.
        """
        if self.ledger is not None:
            await self._write_ledger(self.ledger, query, result)
        if self._quotas is not None:
            tokens = result.input_tokens + result.output_tokens
            await self._quotas.charge_tokens(query, tokens)
        if self._metrics is not None:
            self._metrics.observe(query, result)

    async def _write_ledger(
        self, ledger: CostLedger, query: RouteQuery, result: RouteResult
    ) -> None:
        entry = LedgerEntry(
            created_at=time.time(),
            request_id=result.request_id,
            tenant=query.tenant,
            user=query.user,
            tier=result.tier,
            model=result.model,
            cache_status=str(result.cache_status),
            degraded=result.degraded,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cost_usd=result.cost_usd,
            baseline_cost_usd=result.baseline_cost_usd,
            latency_ms=result.latency_ms,
            cache_entry_id=result.cache_entry_id,
        )
        try:
            # SQLite commits wait for the disk, so they run off the event loop.
            await asyncio.to_thread(ledger.record, entry)
            if self._cost_alert is not None:
                await asyncio.to_thread(self._cost_alert.check)
        except sqlite3.Error:
            logger.exception(
                "ledger_write_failed", extra={"request_id": result.request_id}
            )
