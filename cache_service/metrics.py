"""Prometheus metrics of the cache service, registered on a registry the caller owns.

RPC counts and latencies are updated as RPCs finish. Hits, misses, entries,
evictions and the index size are read from the cache's own counters at scrape
time, so the cache needs no metrics code. No metric has a tenant label.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from cache_service.cache import SemanticCache
from cache_service.entries import CacheStats
from cache_service.feedback import FeedbackCounts

# Seconds. Lookups take milliseconds, a Store with a first embedding can take
# hundreds, and the buckets reach past the router's 5 s latency alert.
RPC_LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
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
    10.0,
)


class CacheStatsCollector(Collector):
    """Exports the counters and sizes of an attached cache at each scrape.

    Before `attach` it exports only `querygate_cache_ready` = 0.
    """

    def __init__(self) -> None:
        self._cache: SemanticCache | None = None
        self._feedback_counts: Callable[[], FeedbackCounts] | None = None

    def attach(
        self, cache: SemanticCache, feedback_counts: Callable[[], FeedbackCounts]
    ) -> None:
        """Export the counters of `cache` and its feedback marks from now on."""
        self._feedback_counts = feedback_counts
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        cache = self._cache
        yield GaugeMetricFamily(
            "querygate_cache_ready",
            "1 once the embedding model and the stored entries are loaded.",
            value=0 if cache is None else 1,
        )
        if cache is None or self._feedback_counts is None:
            return
        yield from _stats_metrics(cache.stats())

        feedback = self._feedback_counts()
        marks = CounterMetricFamily(
            "querygate_cache_feedback",
            "Feedback marks applied, by rating (good, bad).",
            labels=["rating"],
        )
        marks.add_metric(["good"], feedback.good)
        marks.add_metric(["bad"], feedback.bad)
        yield marks


def _stats_metrics(stats: CacheStats) -> Iterator[Metric]:
    hits = CounterMetricFamily(
        "querygate_cache_hits",
        "Lookups answered from the cache, by layer (exact, semantic).",
        labels=["layer"],
    )
    hits.add_metric(["exact"], stats.exact_hits)
    hits.add_metric(["semantic"], stats.semantic_hits)
    yield hits
    yield _counter("querygate_cache_misses", "Lookups with no hit.", stats.misses)
    yield _counter("querygate_cache_stores", "Answers stored.", stats.stores)
    yield _counter(
        "querygate_cache_evictions",
        "Entries evicted, least recently used first, to stay within "
        "max_entries or max_memory_mb.",
        stats.evictions,
    )
    yield _counter(
        "querygate_cache_expirations",
        "Entries removed by the sweeper after both TTLs passed.",
        stats.expirations,
    )

    yield GaugeMetricFamily(
        "querygate_cache_entries", "Entries held now.", value=stats.entries
    )
    yield GaugeMetricFamily(
        "querygate_cache_index_vectors",
        "Vectors in the FAISS indexes of all scopes now.",
        value=stats.index_vectors,
    )
    yield GaugeMetricFamily(
        "querygate_cache_index_rebuilds_running",
        "Scopes whose IVF index is being trained in the background now.",
        value=stats.index_rebuilds_running,
    )


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


class CacheMetrics:
    """RPC, cache and process metrics of one cache server."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.rpcs = Counter(
            "querygate_cache_rpcs",
            "Finished RPCs by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_duration = Histogram(
            "querygate_cache_rpc_duration_seconds",
            "Time from the start of an RPC to its status, by method.",
            ["method"],
            buckets=RPC_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.start_time = Gauge(
            "querygate_cache_start_time_seconds",
            "Unix time at which this cache service started; uptime is time() "
            "minus this.",
            registry=self.registry,
        )
        self.start_time.set(clock())
        self.embedding = Info(
            "querygate_cache_embedding",
            "Embedding model, dimension and backend of the loaded cache.",
            registry=self.registry,
        )
        self.stats = CacheStatsCollector()
        self.registry.register(self.stats)
        ProcessCollector(registry=self.registry)

    def observe_rpc(self, method: str, code: str, duration_s: float) -> None:
        """Count one finished RPC and its duration."""
        self.rpcs.labels(method, code).inc()
        self.rpc_duration.labels(method).observe(duration_s)

    def attach(
        self,
        cache: SemanticCache,
        feedback_counts: Callable[[], FeedbackCounts],
        backend: str,
    ) -> None:
        """Export the counters of a loaded cache and describe its model."""
        self.embedding.info(
            {
                "model": cache.embedder.model_name,
                "dimension": str(cache.embedder.dimension),
                "backend": backend,
            }
        )
        self.stats.attach(cache, feedback_counts)
