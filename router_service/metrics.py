"""Prometheus metrics of the router, registered on a registry the caller owns."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from router_service.domain import FeedbackRating, RouteResult
from router_service.resilience import BreakerState


class RouterMetrics:
    """Counters of requests and cost, and the state of each circuit breaker."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "querygate_router_requests",
            "Finished requests by tier, model and cache status.",
            ["tier", "model", "cache_status"],
            registry=self.registry,
        )
        self.cost_usd = Counter(
            "querygate_router_cost_usd",
            "List-price cost of finished requests in USD.",
            registry=self.registry,
        )
        self.baseline_cost_usd = Counter(
            "querygate_router_baseline_cost_usd",
            "Cost of the same requests on the complex tier without a cache, in USD.",
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "querygate_router_breaker_state",
            "Circuit breaker state per model: 0 closed, 1 open, 2 half-open.",
            ["model"],
            registry=self.registry,
        )
        self.cost_alerts = Counter(
            "querygate_router_daily_cost_alerts",
            "Days whose cost passed twice the trailing daily average.",
            registry=self.registry,
        )
        self.feedback = Counter(
            "querygate_router_feedback",
            "Feedback marks that the cache applied, by rating (good or bad).",
            ["rating"],
            registry=self.registry,
        )
        # Export both ratings from the start, so a rate of bad marks is defined
        # before the first one arrives.
        for rating in FeedbackRating:
            self.feedback.labels(str(rating))

    def observe(self, result: RouteResult) -> None:
        """Count one finished request."""
        self.requests.labels(
            result.tier, result.model or "none", str(result.cache_status)
        ).inc()
        self.cost_usd.inc(result.cost_usd)
        self.baseline_cost_usd.inc(result.baseline_cost_usd)

    def set_breaker_state(self, model: str, state: BreakerState) -> None:
        """Export a breaker's new state."""
        self.breaker_state.labels(model).set(int(state))
