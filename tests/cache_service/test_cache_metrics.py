"""Cache metrics and per-RPC log lines, read from a real server on port 0.

The server runs the real embedding model and FAISS, and each test scrapes the
real /metrics endpoint over HTTP after real RPCs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from prometheus_scrape import Scrape, scrape
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.errors import SettingsError
from cache_service.server import RunningServer, create_server
from cache_service.settings import CacheSettings
from cache_service.testing import FakeEmbedder, settings_for_tests, start_cache_server

ACME = cache_pb2.Scope(tenant="acme", model="auto")


@dataclass
class Cache:
    running: RunningServer
    stub: cache_pb2_grpc.CacheServiceStub

    def scrape(self) -> Scrape:
        port = self.running.metrics_port
        assert port is not None
        return scrape(port)

    def store(self, query: str, answer: str, **metadata: str) -> str:
        response = self.stub.Store(
            cache_pb2.StoreRequest(
                query=query,
                scope=ACME,
                answer=answer,
                finish_reason="stop",
                metadata=metadata,
            ),
            timeout=30,
        )
        return str(response.entry_id)

    def lookup(self, query: str) -> cache_pb2.LookupResponse:
        request = cache_pb2.LookupRequest(query=query, scope=ACME)
        return self.stub.Lookup(request, timeout=30)


@pytest.fixture
def cache(real_embedder: SentenceTransformerEmbedder) -> Iterator[Cache]:
    # The guard's verifier does not change the metrics; its rules stay on.
    settings = settings_for_tests(
        metrics_address="127.0.0.1:0", max_entries=2, false_hit_guard="rules"
    )
    with (
        start_cache_server(real_embedder, settings) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        yield Cache(running, cache_pb2_grpc.CacheServiceStub(channel))


def test_hits_by_layer_misses_and_rpc_codes(cache: Cache) -> None:
    cache.store("Who wrote Hamlet?", "William Shakespeare")
    exact = cache.lookup("who wrote hamlet")
    semantic = cache.lookup("Who is the author of Hamlet?")
    miss = cache.lookup("How do volcanoes form?")
    with pytest.raises(grpc.RpcError):
        cache.lookup("   ")

    metrics = cache.scrape()

    assert exact.layer == cache_pb2.HIT_LAYER_EXACT
    assert semantic.layer == cache_pb2.HIT_LAYER_SEMANTIC
    assert not miss.hit
    assert metrics.value("querygate_cache_hits_total", layer="exact") == 1
    assert metrics.value("querygate_cache_hits_total", layer="semantic") == 1
    assert metrics.value("querygate_cache_misses_total") == 1
    rpcs = "querygate_cache_rpcs_total"
    assert metrics.value(rpcs, method="Lookup", code="OK") == 3
    assert metrics.value(rpcs, method="Lookup", code="INVALID_ARGUMENT") == 1
    assert metrics.value(rpcs, method="Store", code="OK") == 1
    duration = "querygate_cache_rpc_duration_seconds_count"
    assert metrics.value(duration, method="Lookup") == 4


def test_entries_evictions_index_and_feedback(cache: Cache) -> None:
    first = cache.store("Who wrote Hamlet?", "William Shakespeare")
    cache.store("What is the boiling point of water?", "100 degrees Celsius")
    third = cache.store("How many legs does a spider have?", "Eight")
    cache.stub.Feedback(
        cache_pb2.FeedbackRequest(
            entry_id=third, tenant="acme", rating=cache_pb2.FEEDBACK_RATING_BAD
        ),
        timeout=30,
    )

    metrics = cache.scrape()

    assert first != third
    assert metrics.value("querygate_cache_stores_total") == 3
    # max_entries is 2, so the third store evicted the first entry.
    assert metrics.value("querygate_cache_evictions_total") == 1
    # The bad mark removed the third entry.
    assert metrics.value("querygate_cache_entries") == 1
    assert metrics.value("querygate_cache_index_vectors") == 1
    assert metrics.value("querygate_cache_index_rebuilds_running") == 0
    assert metrics.value("querygate_cache_feedback_total", rating="bad") == 1
    assert metrics.value("querygate_cache_feedback_total", rating="good") == 0
    assert metrics.value("querygate_cache_expirations_total") == 0


def test_ready_model_info_and_start_time(cache: Cache) -> None:
    metrics = cache.scrape()

    started = metrics.value("querygate_cache_start_time_seconds")
    assert metrics.value("querygate_cache_ready") == 1
    assert (
        metrics.value(
            "querygate_cache_embedding_info",
            model=cache.running.wait_until_serving().embedder.model_name,
            dimension="384",
            backend="onnx",
        )
        == 1
    )
    assert started is not None
    assert 0 <= time.time() - started < 600
    assert metrics.value("process_resident_memory_bytes") is not None


def test_not_ready_until_loaded() -> None:
    loaded = FakeEmbedder()
    release = threading.Event()

    def load_slowly() -> FakeEmbedder:
        release.wait(30)
        return loaded

    settings = settings_for_tests(
        metrics_address="127.0.0.1:0", false_hit_guard="rules"
    )
    running = create_server(settings, load_embedder=load_slowly)
    try:
        port = running.metrics_port
        assert port is not None
        before = scrape(port)
        release.set()
        running.wait_until_serving(timeout_s=30)
        after = scrape(port)
    finally:
        release.set()
        running.stop(grace_s=0)

    assert before.value("querygate_cache_ready") == 0
    assert "querygate_cache_entries" not in before.names()
    assert after.value("querygate_cache_ready") == 1
    assert after.value("querygate_cache_entries") == 0


def test_rpc_log_line_has_standard_fields(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cache_service.rpc_telemetry")
    cache.store("Who wrote Hamlet?", "William Shakespeare", request_id="r-1")
    cache.lookup("who wrote hamlet")
    with pytest.raises(grpc.RpcError):
        cache.lookup("")

    store, hit, invalid = [
        r.__dict__ for r in caplog.records if r.getMessage() == "rpc_completed"
    ]

    assert store["method"] == "Store"
    assert store["code"] == "OK"
    assert store["tenant"] == "acme"
    assert store["request_id"] == "r-1"
    assert store["cache_status"] is None
    assert hit["method"] == "Lookup"
    assert hit["cache_status"] == "exact_hit"
    assert hit["error_id"] is None
    assert hit["duration_ms"] >= 0
    assert invalid["code"] == "INVALID_ARGUMENT"
    assert invalid["tenant"] == "acme"


def test_metrics_address_rejects_missing_port() -> None:
    with pytest.raises(SettingsError, match="metrics_address must be HOST:PORT"):
        CacheSettings(metrics_address="127.0.0.1")
