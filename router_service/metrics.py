"""Prometheus metrics of the router, registered on a registry the caller owns.

Series count: the tenant label (tokens, cost and baseline cost) adds series per
tenant and model. Only the first `max_tenants` distinct tenants get their own label
value; later ones are counted under OTHER_TENANTS, so a scrape stays bounded. Every
other label takes values from the configuration or from fixed sets.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.process_collector import ProcessCollector

from router_service.domain import FeedbackRating, RouteQuery, RouteResult
from router_service.resilience import BreakerState

logger = logging.getLogger(__name__)

# Seconds. Dense below 1 s for cache hits, and around 5 s, the latency alert's bound.
RPC_LATENCY_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    30.0,
    60.0,
)
ACTIVE_WINDOW_S = 24 * 3600.0
# Tenants or users remembered per window. Beyond this the least recently seen are
# forgotten, so the active counts stop growing at this value.
MAX_TRACKED_SUBJECTS = 100_000
DEFAULT_MAX_TENANTS = 100
# Tenant label value shared by every tenant beyond the first `max_tenants`. It
# contains a space, which check_tenant rejects in a tenant id, so no tenant can
# have its own series under this value.
OTHER_TENANTS = "(other tenants)"


class TenantLabels:
    """Tenant label values: the first `max_tenants` distinct tenants keep their own.

    Every later tenant maps to OTHER_TENANTS for the life of the process, so the
    number of tenant series cannot grow without bound. The first overflow logs
    one WARNING.
    """

    def __init__(self, max_tenants: int) -> None:
        self._max_tenants = max_tenants
        self._labelled: set[str] = set()
        self._overflowed = False
        self._lock = threading.Lock()

    def label(self, tenant: str) -> str:
        """Return the label value under which `tenant` is counted."""
        with self._lock:
            if tenant in self._labelled:
                return tenant
            if len(self._labelled) < self._max_tenants:
                self._labelled.add(tenant)
                return tenant
            first_overflow = not self._overflowed
            self._overflowed = True
        if first_overflow:
            logger.warning(
                "metrics_tenant_limit_reached",
                extra={
                    "max_tenants": self._max_tenants,
                    "label": OTHER_TENANTS,
                    "remedy": "raise [server] metrics_max_tenants if the series "
                    "fit in Prometheus; the ledger keeps exact costs per tenant",
                },
            )
        return OTHER_TENANTS


class RecentlySeen:
    """Counts distinct keys seen within a sliding window, in bounded memory.

    Keys are stored as 8-byte BLAKE2b digests with their last-seen time, at most
    `max_keys` of them. NOTE: above `max_keys` distinct keys per window the count
    is capped at `max_keys`, so it undercounts.
    """

    def __init__(
        self,
        window_s: float,
        max_keys: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._last_seen: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        """Record that `key` was seen now."""
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
        with self._lock:
            self._last_seen[digest] = self._clock()
            self._last_seen.move_to_end(digest)
            while len(self._last_seen) > self._max_keys:
                self._last_seen.popitem(last=False)

    def count(self) -> int:
        """Forget keys older than the window and return how many remain."""
        cutoff = self._clock() - self._window_s
        with self._lock:
            while self._last_seen:
                oldest = next(iter(self._last_seen.values()))
                if oldest >= cutoff:
                    break
                self._last_seen.popitem(last=False)
            return len(self._last_seen)


class RouterMetrics:
    """Request, model, cost, quota and classifier metrics of one router."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_tenants: int = DEFAULT_MAX_TENANTS,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self._tenant_labels = TenantLabels(max_tenants)
        self._define_rpc_metrics()
        self._define_model_metrics()
        self._define_cost_metrics()
        self._define_service_metrics(clock)

    def _define_rpc_metrics(self) -> None:
        registry = self.registry
        self.rpcs = Counter(
            "querygate_router_rpcs",
            "Finished RPCs by method and gRPC status code.",
            ["method", "code"],
            registry=registry,
        )
        self.rpc_duration = Histogram(
            "querygate_router_rpc_duration_seconds",
            "Time from the start of an RPC to its status, by method.",
            ["method"],
            buckets=RPC_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.requests = Counter(
            "querygate_router_requests",
            "Answered Route and RouteStream requests by tier, model and cache status.",
            ["tier", "model", "cache_status"],
            registry=registry,
        )
        self.route_duration = Histogram(
            "querygate_router_route_duration_seconds",
            "Latency of answered requests inside the router, by cache status.",
            ["cache_status"],
            buckets=RPC_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.rate_limit_rejections = Counter(
            "querygate_router_rate_limit_rejections",
            "Requests rejected by a rate limit or a daily budget, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in ("rate_limit", "budget"):
            self.rate_limit_rejections.labels(reason)
        self.limit_store_errors = Counter(
            "querygate_router_limit_store_errors",
            "Requests admitted without rate limits because the Redis store failed.",
            registry=self.registry,
        )

    def _define_model_metrics(self) -> None:
        registry = self.registry
        self.model_calls = Counter(
            "querygate_router_model_calls",
            "Model call attempts by model and outcome (success, error, circuit_open).",
            ["model", "outcome"],
            registry=registry,
        )
        self.model_call_duration = Histogram(
            "querygate_router_model_call_duration_seconds",
            "Duration of model call attempts that reached the model, by model.",
            ["model"],
            buckets=RPC_LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.model_retries = Counter(
            "querygate_router_model_retries",
            "Model call attempts after the first one of a request, by model.",
            ["model"],
            registry=registry,
        )
        self.model_fallbacks = Counter(
            "querygate_router_model_fallbacks",
            "Times a model failed and the request moved to the next model.",
            ["model"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "querygate_router_breaker_state",
            "Circuit breaker state per model: 0 closed, 1 open, 2 half-open.",
            ["model"],
            registry=registry,
        )

    def _define_cost_metrics(self) -> None:
        registry = self.registry
        self.tokens = Counter(
            "querygate_router_tokens",
            "Tokens of answered requests by tenant, model and kind (input, output).",
            ["tenant", "model", "kind"],
            registry=registry,
        )
        self.cost_usd = Counter(
            "querygate_router_cost_usd",
            "List-price cost of answered requests in USD, by tenant and model.",
            ["tenant", "model"],
            registry=registry,
        )
        self.baseline_cost_usd = Counter(
            "querygate_router_baseline_cost_usd",
            "Cost of the same requests on the complex tier without a cache, in USD, "
            "by tenant.",
            ["tenant"],
            registry=registry,
        )
        self.savings_usd = Gauge(
            "querygate_router_savings_usd",
            "Baseline cost minus actual cost since start, in USD. A gauge, because "
            "a fallback to a dearer model can make it fall.",
            registry=registry,
        )
        self.cost_alerts = Counter(
            "querygate_router_daily_cost_alerts",
            "Days whose cost passed twice the trailing daily average.",
            registry=registry,
        )

    def _define_service_metrics(self, clock: Callable[[], float]) -> None:
        registry = self.registry
        self.feedback = Counter(
            "querygate_router_feedback",
            "Feedback marks that the cache applied, by rating (good or bad).",
            ["rating"],
            registry=registry,
        )
        # Export both ratings from the start, so a rate of bad marks is defined
        # before the first one arrives.
        for rating in FeedbackRating:
            self.feedback.labels(str(rating))
        self.classifier = Info(
            "querygate_router_classifier",
            "Version of the complexity classifier that serves requests.",
            registry=registry,
        )
        self.start_time = Gauge(
            "querygate_router_start_time_seconds",
            "Unix time at which this router started; uptime is time() minus this.",
            registry=registry,
        )
        self.start_time.set(clock())
        self._active_tenants = RecentlySeen(
            ACTIVE_WINDOW_S, MAX_TRACKED_SUBJECTS, clock
        )
        self._active_users = RecentlySeen(ACTIVE_WINDOW_S, MAX_TRACKED_SUBJECTS, clock)
        Gauge(
            "querygate_router_active_tenants",
            "Distinct tenants that sent a request in the last 24 hours.",
            registry=registry,
        ).set_function(self._active_tenants.count)
        Gauge(
            "querygate_router_active_users",
            "Distinct (tenant, user) pairs that sent a request naming a user in the "
            "last 24 hours.",
            registry=registry,
        ).set_function(self._active_users.count)
        ProcessCollector(registry=registry)

    def observe(self, query: RouteQuery, result: RouteResult) -> None:
        """Count one answered request, its tokens, cost and savings."""
        model = result.model or "none"
        self.requests.labels(result.tier, model, str(result.cache_status)).inc()
        self.route_duration.labels(str(result.cache_status)).observe(
            result.latency_ms / 1000.0
        )
        tenant = self._tenant_labels.label(query.tenant)
        self.tokens.labels(tenant, model, "input").inc(result.input_tokens)
        self.tokens.labels(tenant, model, "output").inc(result.output_tokens)
        self.cost_usd.labels(tenant, model).inc(result.cost_usd)
        self.baseline_cost_usd.labels(tenant).inc(result.baseline_cost_usd)
        self.savings_usd.inc(result.baseline_cost_usd - result.cost_usd)

    def observe_rpc(self, method: str, code: str, duration_s: float) -> None:
        """Count one finished RPC and its duration."""
        self.rpcs.labels(method, code).inc()
        self.rpc_duration.labels(method).observe(duration_s)

    def observe_model_attempt(
        self, model: str, outcome: str, duration_s: float | None, attempt: int
    ) -> None:
        """Count one model call attempt; `attempt` is 1 for the first of a request.

        `duration_s` is None for an attempt the breaker rejected without a call.
        """
        self.model_calls.labels(model, outcome).inc()
        if duration_s is not None:
            self.model_call_duration.labels(model).observe(duration_s)
        if attempt > 1:
            self.model_retries.labels(model).inc()

    def count_fallback(self, model: str) -> None:
        """Count that `model` failed and the next model of the chain was tried."""
        self.model_fallbacks.labels(model).inc()

    def count_rejection(self, reason: str) -> None:
        """Count a request rejected by a rate limit or a budget."""
        self.rate_limit_rejections.labels(reason).inc()

    def count_limit_store_error(self) -> None:
        """Count a request that the rate limits admitted because Redis failed."""
        self.limit_store_errors.inc()

    def see_caller(self, tenant: str, user: str) -> None:
        """Record the request's tenant, and its user when named, as active now."""
        self._active_tenants.add(tenant)
        if user:
            # The separator cannot occur in ids, which reject control characters.
            self._active_users.add(f"{tenant}\x00{user}")

    def set_classifier_version(self, version: str) -> None:
        """Export the version of the classifier that now serves requests."""
        self.classifier.info({"version": version})

    def set_breaker_state(self, model: str, state: BreakerState) -> None:
        """Export a breaker's new state."""
        self.breaker_state.labels(model).set(int(state))
