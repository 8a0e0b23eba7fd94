"""Server wiring: gRPC server, servicer, health, reflection and the TTL sweeper.

Health is NOT_SERVING until the model and the store are loaded. From then on a
background monitor re-runs the checks of ``health_checks`` every
``health_check_interval_s`` and sets SERVING or NOT_SERVING from them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import faiss
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service import embedding
from cache_service.auth import CacheRequestGuard, cache_method_rules, load_key_store
from cache_service.backup import SnapshotWriter
from cache_service.cache import SemanticCache
from cache_service.client_names import client_name_check
from cache_service.embedding import Embedder
from cache_service.health_checks import CacheHealth, HealthMonitor
from cache_service.health_report import HealthReport
from cache_service.metrics import CacheMetrics
from cache_service.persistence import DataDirLock, SqliteEntryStore
from cache_service.request_limits import grpc_limit_options
from cache_service.rpc_telemetry import RpcTelemetryInterceptor
from cache_service.server_port import (
    EXCLUSIVE_PORT_OPTIONS,
    bind_port,
    start_metrics_http,
)
from cache_service.servicer import CacheServicer
from cache_service.settings import CacheSettings

logger = logging.getLogger(__name__)

SERVICE_NAME = cache_pb2.DESCRIPTOR.services_by_name["CacheService"].full_name


@dataclass
class RunningServer:
    """A started cache server. The model loads in the background unless given."""

    server: grpc.Server
    port: int
    settings: CacheSettings
    health: health.HealthServicer
    metrics: CacheMetrics
    _ready: threading.Event = field(default_factory=threading.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    cache: SemanticCache | None = None
    load_error: BaseException | None = None
    health_checks: CacheHealth = field(default_factory=lambda: CacheHealth(False))
    monitor: HealthMonitor | None = None
    metrics_http: Any = None

    @property
    def metrics_port(self) -> int | None:
        """Bound port of the /metrics endpoint, or None when it is off."""
        if self.metrics_http is None:
            return None
        return int(self.metrics_http.server_address[1])

    @property
    def target(self) -> str:
        """Address a client on this host dials, such as ``127.0.0.1:50052``."""
        host = self.settings.address.rpartition(":")[0]
        return f"{host}:{self.port}"

    def wait_until_serving(self, timeout_s: float | None = None) -> SemanticCache:
        """Block until the model and index are loaded and return the cache.

        Raises:
            TimeoutError: loading did not finish within ``timeout_s``.
            RuntimeError: loading failed, with the cause chained.
        """
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"cache server loading timed out after {timeout_s} s")
        if self.load_error is not None or self.cache is None:
            raise RuntimeError("cache server failed to load") from self.load_error
        return self.cache

    def stop(self, grace_s: float = 5.0) -> None:
        """Report NOT_SERVING, stop the sweeper and finish in-flight RPCs."""
        self._stopping.set()
        if self.monitor is not None:
            self.monitor.stop()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        if self.cache is not None:
            self.cache.close()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
        logger.info("server_stopped", extra={"port": self.port})


def create_server(
    settings: CacheSettings,
    embedder: Embedder | None = None,
    *,
    load_embedder: Callable[[], Embedder] | None = None,
    clock: Callable[[], float] = time.time,
) -> RunningServer:
    """Bind ``settings.address``, start serving and load the cache.

    Health reports NOT_SERVING until the cache is ready, then SERVING. With
    ``embedder`` given (tests share one loaded model), the cache is ready when this
    returns. Otherwise ``load_embedder`` (default: the model of
    ``settings.embedding_model_dir``) runs on a background thread, and
    ``wait_until_serving`` waits for it.

    Raises:
        AddressInUseError: another process listens on ``settings.address`` or
            ``settings.metrics_address``.
        StorageError: another cache service or a restore uses ``settings.data_dir``.
        RuntimeError: the address cannot be bound for another reason.
    """
    # Each lookup searches one query, and FAISS's OpenMP threads slow that down:
    # on a 2-core machine under load, one search of 20,000 vectors took 1.7 ms
    # with one thread and 22 ms with two. NOTE: this setting is process-wide.
    faiss.omp_set_num_threads(1)
    metrics = CacheMetrics()
    health_checks = CacheHealth(durable=settings.data_dir is not None)
    servicer = CacheServicer(
        settings.min_cosine_similarity,
        health=health_checks,
        snapshots=SnapshotWriter(settings.data_dir, settings.backup_dir),
    )
    guard = CacheRequestGuard(
        load_key_store(settings),
        cache_method_rules(),
        client_name_check(settings.tls_client_allowed_names),
    )
    # The telemetry interceptor comes first, so it also counts and logs the RPCs
    # that later interceptors reject.
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers),
        interceptors=[RpcTelemetryInterceptor(metrics, SERVICE_NAME), guard],
        options=grpc_limit_options(
            settings.max_message_bytes, settings.max_metadata_bytes
        )
        + EXCLUSIVE_PORT_OPTIONS,
    )
    cache_pb2_grpc.add_CacheServiceServicer_to_server(servicer, server)

    health_servicer = health.HealthServicer()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )

    # Lock the data folder before binding, so a second cache on the same folder
    # fails at once instead of after loading the model.
    data_dir_lock = (
        None if settings.data_dir is None else DataDirLock(settings.data_dir)
    )
    try:
        port = bind_port(
            server,
            settings.address,
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.tls_client_ca_file,
        )
    except BaseException:
        if data_dir_lock is not None:
            data_dir_lock.release()
        raise
    server.start()
    running = RunningServer(
        server=server,
        port=port,
        settings=settings,
        health=health_servicer,
        metrics=metrics,
        health_checks=health_checks,
    )
    if settings.metrics_address:
        try:
            running.metrics_http = start_metrics_http(
                settings.metrics_address, metrics.registry
            )
        except BaseException:
            # Nothing was served yet, so stop at once and free the data folder.
            server.stop(0).wait()
            if data_dir_lock is not None:
                data_dir_lock.release()
            raise
    logger.info("server_started", extra={"port": port, **settings.as_log_fields()})

    if embedder is not None:
        _load_cache(running, servicer, lambda: embedder, clock, data_dir_lock)
        return running

    def load_default() -> Embedder:
        return embedding.load_embedder(
            settings.embedding_backend,
            settings.embedding_model_dir,
            settings.onnx_dir,
        )

    threading.Thread(
        target=_load_cache,
        args=(running, servicer, load_embedder or load_default, clock, data_dir_lock),
        name="cache-loader",
        daemon=True,
    ).start()
    return running


def _load_cache(
    running: RunningServer,
    servicer: CacheServicer,
    load_embedder: Callable[[], Embedder],
    clock: Callable[[], float],
    data_dir_lock: DataDirLock | None,
) -> None:
    entry_store = None
    try:
        embedder = load_embedder()
        if running.settings.data_dir is not None:
            entry_store = SqliteEntryStore.open(
                running.settings.data_dir,
                embedder.model_name,
                embedder.dimension,
                data_dir_lock,
            )
        cache = SemanticCache(
            running.settings, embedder, clock=clock, entry_store=entry_store
        )
    except Exception as error:
        if entry_store is not None:
            entry_store.close()
        elif data_dir_lock is not None:
            data_dir_lock.release()
        running.load_error = error
        running.health_checks.record_load_failure(error)
        logger.exception("cache_load_failed")
        running._ready.set()
        return

    running.cache = cache
    servicer.attach(cache)
    running.metrics.attach(
        cache, servicer.feedback_counts, running.settings.embedding_backend
    )
    running.health_checks.attach(cache, entry_store)
    running.monitor = HealthMonitor(
        running.health_checks.check,
        lambda report: _publish_health(running.health, report),
        running.settings.health_check_interval_s,
    )
    running.monitor.run_once()
    running.monitor.start()
    threading.Thread(
        target=_sweep_forever,
        args=(cache, running._stopping, running.settings.sweep_interval_s),
        name="cache-sweeper",
        daemon=True,
    ).start()
    logger.info("index_loaded", extra={"entries": cache.stats().entries})
    running._ready.set()


def _publish_health(servicer: health.HealthServicer, report: HealthReport) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if report.serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE_NAME):
        servicer.set(name, status)


def _sweep_forever(
    cache: SemanticCache, stopping: threading.Event, interval_s: float
) -> None:
    while not stopping.wait(interval_s):
        try:
            cache.sweep_expired()
        except Exception:
            # The next sweep retries, and lookups never serve expired entries anyway.
            logger.exception("cache_sweep_failed")
