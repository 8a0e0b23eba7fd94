"""Every metric that the router and the cache service export, with its labels.

The catalog comes from real `RouterMetrics` and `CacheMetrics` registries after one
observation of each kind, so a renamed or removed metric drops out of it.
"""

from __future__ import annotations

import functools
import re
import shutil
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from cache_service.cache import SemanticCache
from cache_service.feedback import FeedbackCounts
from cache_service.metrics import CacheMetrics
from cache_service.testing import FakeEmbedder, settings_for_tests
from router_service.domain import CacheStatus, RouteQuery, RouteResult
from router_service.metrics import RouterMetrics
from router_service.resilience import BreakerState

# Labels that Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
# Series that Prometheus itself writes for each scrape target.
SCRAPE_SERIES = {"up": TARGET_LABELS}

SELECTOR = re.compile(r"\b((?:querygate|process)_[a-z0-9_]+|up)\b(\{[^}]*\})?")
RECORDED = re.compile(r"\bquerygate:[a-z0-9_:]+")
MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")

PROMTOOL_MISSING = (
    "promtool not found on PATH. Install Debian's prometheus package, which "
    "contains it: apt-get install -y --no-install-recommends prometheus"
)


@dataclass(frozen=True)
class Selector:
    """A metric name in a PromQL expression and the label names it matches on."""

    name: str
    labels: frozenset[str]


def _observed_router_registry() -> CollectorRegistry:
    metrics = RouterMetrics()
    query = RouteQuery(query="q", tenant="acme", user="u1")
    result = RouteResult(
        answer="a",
        tier="simple",
        model="m",
        cache_status=CacheStatus.MISS,
        similarity=0.0,
        input_tokens=1,
        output_tokens=1,
        cost_usd=0.1,
        baseline_cost_usd=0.2,
        latency_ms=1.0,
        request_id="r",
        finish_reason="stop",
    )
    metrics.observe(query, result)
    metrics.observe_rpc("Route", "OK", 0.1)
    metrics.observe_model_attempt("m", "success", 0.1, attempt=2)
    metrics.count_fallback("m")
    metrics.count_rejection("rate_limit")
    metrics.set_breaker_state("m", BreakerState.OPEN)
    metrics.set_classifier_version("v1")
    metrics.see_caller("acme", "u1")
    metrics.cost_alerts.inc()
    return metrics.registry


def _observed_cache_registry() -> CollectorRegistry:
    metrics = CacheMetrics()
    # The guard does not change which metrics exist, so it stays off.
    cache = SemanticCache(settings_for_tests(false_hit_guard="off"), FakeEmbedder())
    metrics.attach(cache, lambda: FeedbackCounts(good=0, bad=0), "onnx")
    metrics.observe_rpc("Lookup", "OK", 0.01)
    return metrics.registry


@functools.cache
def exported_series() -> dict[str, frozenset[str]]:
    """Map each exported sample name to its label names, including target labels."""
    series: dict[str, frozenset[str]] = dict(SCRAPE_SERIES)
    for registry in (_observed_router_registry(), _observed_cache_registry()):
        for family in registry.collect():
            for sample in family.samples:
                labels = frozenset(sample.labels) | TARGET_LABELS
                series[sample.name] = series.get(sample.name, frozenset()) | labels
    return series


@functools.cache
def exported_families() -> frozenset[str]:
    """Return the name of every querygate_* metric family."""
    names = set()
    for registry in (_observed_router_registry(), _observed_cache_registry()):
        for family in registry.collect():
            if family.name.startswith("querygate_"):
                names.add(family.name)
    return frozenset(names)


def selectors(expr: str) -> list[Selector]:
    """List the metric names of `expr` with the label names of their matchers."""
    found = []
    for match in SELECTOR.finditer(expr):
        matchers = match.group(2) or ""
        labels = frozenset(MATCHER_LABEL.findall(matchers))
        found.append(Selector(match.group(1), labels))
    return found


def recorded_names(expr: str) -> set[str]:
    """Return the recording-rule names (`querygate:...`) that `expr` reads."""
    return set(RECORDED.findall(expr))


def promtool() -> str:
    """Return the path of promtool.

    Raises:
        AssertionError: promtool is not installed, with the command to install it.
    """
    path = shutil.which("promtool")
    if path is None:
        raise AssertionError(PROMTOOL_MISSING)
    return path
