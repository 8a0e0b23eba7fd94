"""Dependency checks of the router, and the task that re-runs the critical ones.

The classifier and the cost ledger are critical: when either fails, the router
reports NOT_SERVING through ``grpc.health.v1``. The cache service, the model
backends and the Redis store of the rate limits are not. Without the cache the
router still responds, uncached with cache status UNAVAILABLE. Without one model it
falls back to the next, and without Redis it admits requests without rate limits.
So their failures make the Health RPC's report DEGRADED but keep the router
SERVING.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import httpx

from cache_service.health_report import (
    CheckResult,
    CheckStatus,
    HealthReport,
    check_memory,
    run_check,
)
from router_service.cache_client import CacheClient
from router_service.errors import CacheUnavailableError, NotReadyError
from router_service.ledger import CostLedger
from router_service.quotas import FAIL_OPEN_POLICY, RequestQuotas
from router_service.resilience import BreakerState
from router_service.routing import Router
from router_service.settings import ModelSettings

logger = logging.getLogger(__name__)

# Upper bound of each network probe (cache service, model servers) and of the
# wait for the ledger's write lock, so one Health call ends within about this.
PROBE_TIMEOUT_S = 2.0

Probe = Callable[[], Awaitable[tuple[CheckStatus, str]]]


async def run_async_check(name: str, critical: bool, probe: Probe) -> CheckResult:
    """Time ``probe`` and turn any exception it raises into a FAILING result."""
    started = time.perf_counter()
    try:
        status, detail = await probe()
    except Exception as error:
        status, detail = CheckStatus.FAILING, f"{type(error).__name__}: {error}"
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    return CheckResult(name, status, detail, latency_ms, critical)


class RouterHealth:
    """Checks the classifier, ledger, cache service, model backends and memory."""

    def __init__(
        self,
        router: Router,
        ledger: CostLedger,
        cache_client: CacheClient | None,
        models: Mapping[str, ModelSettings],
        *,
        quotas: RequestQuotas | None = None,
    ) -> None:
        self._router = router
        self._quotas = quotas
        self._ledger = ledger
        self._cache_client = cache_client
        self._models = models
        self._load_error: BaseException | None = None
        self._http = httpx.AsyncClient(timeout=PROBE_TIMEOUT_S)

    def record_load_failure(self, error: BaseException) -> None:
        """Report the classifier as failed to load."""
        self._load_error = error

    async def check_critical(self) -> HealthReport:
        """Run the checks that decide SERVING: classifier and ledger."""
        return HealthReport(
            tuple(
                await asyncio.gather(
                    run_async_check("classifier", True, self._check_classifier),
                    run_async_check("ledger", True, self._check_ledger),
                )
            )
        )

    async def check(self) -> HealthReport:
        """Run every check concurrently. Never raises: a failure is FAILING."""
        optional_checks = [
            run_async_check(f"model:{name}", False, self._model_probe(model))
            for name, model in self._models.items()
        ]
        quotas = self._quotas
        if quotas is not None and quotas.uses_redis:
            # An in-memory store lives in this process, so it gets no check.
            optional_checks.append(
                run_async_check("limits_store", False, _limits_store_probe(quotas))
            )
        results = await asyncio.gather(
            run_async_check("classifier", True, self._check_classifier),
            run_async_check("ledger", True, self._check_ledger),
            run_async_check("cache_service", False, self._check_cache),
            *optional_checks,
        )
        memory = run_check("memory", False, check_memory)
        return HealthReport((*results, memory))

    async def aclose(self) -> None:
        """Close the HTTP client of the model probes."""
        await self._http.aclose()

    async def _check_classifier(self) -> tuple[CheckStatus, str]:
        try:
            version = self._router.classifier.version
        except NotReadyError:
            if self._load_error is not None:
                return (
                    CheckStatus.FAILING,
                    f"the classifier failed to load: {type(self._load_error).__name__}",
                )
            return CheckStatus.FAILING, "the classifier is still loading"
        return CheckStatus.OK, f"version {version}"

    async def _check_ledger(self) -> tuple[CheckStatus, str]:
        if self._ledger.path is None:
            return CheckStatus.OK, "in memory only ([ledger] path is empty)"
        await asyncio.to_thread(self._ledger.check_writable, PROBE_TIMEOUT_S)
        return CheckStatus.OK, "SQLite accepts writes"

    async def _check_cache(self) -> tuple[CheckStatus, str]:
        if self._cache_client is None:
            return CheckStatus.OK, "in-process cache, no cache service"
        try:
            status = await self._cache_client.health_status(PROBE_TIMEOUT_S)
        except CacheUnavailableError as error:
            return CheckStatus.FAILING, f"{error}; requests are answered uncached"
        if status != "SERVING":
            return (
                CheckStatus.FAILING,
                f"the cache service reports {status}; requests are answered uncached",
            )
        return CheckStatus.OK, "SERVING"

    def _model_probe(self, model: ModelSettings) -> Probe:
        async def probe() -> tuple[CheckStatus, str]:
            breaker = self._router.breakers[model.name].state
            if model.backend == "simulator":
                reachable = (CheckStatus.OK, "simulated backend")
            else:
                reachable = await self._probe_http(model)
            if breaker is BreakerState.OPEN:
                return CheckStatus.FAILING, f"circuit breaker open; {reachable[1]}"
            if breaker is BreakerState.HALF_OPEN:
                return (
                    CheckStatus.DEGRADED,
                    f"circuit breaker half-open; {reachable[1]}",
                )
            return reachable

        return probe

    async def _probe_http(self, model: ModelSettings) -> tuple[CheckStatus, str]:
        """GET ``<base_url>/models``. Any HTTP status below 500 means it is up."""
        url = model.base_url.rstrip("/") + "/models"
        try:
            response = await self._http.get(url)
        except httpx.TimeoutException:
            return CheckStatus.FAILING, f"no response within {PROBE_TIMEOUT_S} s"
        except httpx.TransportError as error:
            return CheckStatus.FAILING, f"unreachable: {type(error).__name__}"
        if response.status_code >= 500:
            return CheckStatus.FAILING, f"HTTP {response.status_code} from /models"
        return CheckStatus.OK, f"HTTP {response.status_code} from /models"


def _limits_store_probe(quotas: RequestQuotas) -> Probe:
    async def probe() -> tuple[CheckStatus, str]:
        problem = await quotas.check_store()
        if problem is not None:
            return CheckStatus.FAILING, f"{problem}; {FAIL_OPEN_POLICY}"
        return CheckStatus.OK, f"Redis at {quotas.store_address} replies"

    return probe


async def monitor_health(
    check: Callable[[], Awaitable[HealthReport]],
    publish: Callable[[bool], Awaitable[None]],
    interval_s: float,
    *,
    serving: bool,
) -> None:
    """Re-run ``check`` every ``interval_s`` and publish whether to serve.

    ``serving`` is the status published before the first run. A change is
    logged as ``health_changed``: a WARNING with the failing checks, or an INFO
    line on recovery. Runs until cancelled.
    """
    while True:
        await asyncio.sleep(interval_s)
        try:
            report = await check()
        except Exception:
            # The next run retries; the last published status stays.
            logger.exception("health_check_failed")
            continue
        if report.serving != serving:
            fields = {"serving": report.serving, "problems": report.failing()}
            if report.serving:
                logger.info("health_changed", extra=fields)
            else:
                logger.warning("health_changed", extra=fields)
            serving = report.serving
        await publish(serving)
