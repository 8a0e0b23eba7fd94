"""Server wiring: grpc.aio server, router servicer, health and reflection.

Health reports NOT_SERVING until the complexity classifier is loaded, then
SERVING. Requests that pin a tier are answered before that; requests that need
the classifier get UNAVAILABLE. From then on a background task re-runs the
classifier and ledger checks every ``health_check_interval_s`` and sets SERVING
or NOT_SERVING from them (see ``router_service.health_checks``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from querygate.router.v1 import router_pb2, router_pb2_grpc

from cache_service.client_names import client_name_check
from cache_service.request_limits import grpc_limit_options
from cache_service.server_port import (
    EXCLUSIVE_PORT_OPTIONS,
    bind_port,
    start_metrics_http,
)
from router_service.accounting import ModelAnswer
from router_service.auth import RouterRequestGuard, load_key_store
from router_service.backends import ModelBackend, build_backend
from router_service.bookkeeping import RequestAccounting
from router_service.cache_client import CacheClient, cache_channel_credentials
from router_service.cache_key import cache_api_key
from router_service.classifier_reload import (
    ArtifactWatcher,
    ClassifierLoader,
    ClassifierReloader,
)
from router_service.domain import CacheHit, SemanticCache
from router_service.feedback import AnswerFeedback
from router_service.health_checks import RouterHealth, monitor_health
from router_service.ledger import CostLedger
from router_service.ledger_backup import LedgerSnapshotWriter
from router_service.metrics import RouterMetrics
from router_service.quotas import RequestQuotas
from router_service.replica_flight import RedisSingleFlight
from router_service.routing import TierClassifier
from router_service.rpc_telemetry import RpcTelemetryInterceptor
from router_service.servicer import RouterServicer
from router_service.settings import RouterSettings
from router_service.streaming import StreamingRouter

logger = logging.getLogger(__name__)

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


def load_complexity_classifier(artifact_dir: Path | None) -> TierClassifier:
    """Load the classifier from `artifact_dir`, or the committed artifact if None."""
    from router_service.classifier import ComplexityClassifier, default_artifact_dir

    return ComplexityClassifier.load(artifact_dir or default_artifact_dir())


@dataclass
class RunningServer:
    """A started router server; the classifier may still be loading."""

    server: grpc.aio.Server
    port: int
    router: StreamingRouter
    health: health.aio.HealthServicer
    backends: Mapping[str, ModelBackend]
    cache_client: CacheClient | None
    metrics: RouterMetrics
    ledger: CostLedger
    metrics_http: Any = None
    loader: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None
    load_error: BaseException | None = None
    health_checks: RouterHealth | None = None
    health_check_interval_s: float = 5.0
    monitor: asyncio.Task[None] | None = None
    replica_flights: RedisSingleFlight[ModelAnswer, CacheHit] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def target(self) -> str:
        """The address a local client dials, such as 127.0.0.1:50051."""
        return f"127.0.0.1:{self.port}"

    async def wait_until_serving(self, timeout_s: float | None = None) -> None:
        """Wait until the classifier is loaded.

        Raises:
            TimeoutError: loading did not finish within `timeout_s`.
            RuntimeError: loading failed; the cause is chained.
        """
        await asyncio.wait_for(self._ready.wait(), timeout_s)
        if self.load_error is not None:
            raise RuntimeError("the classifier failed to load") from self.load_error

    async def stop(self, grace_s: float = 5.0) -> None:
        """Report NOT_SERVING, finish in-flight RPCs and close every connection."""
        await self.health.enter_graceful_shutdown()
        if self.loader is not None:
            self.loader.cancel()
        if self.watcher is not None:
            self.watcher.cancel()
        if self.monitor is not None:
            self.monitor.cancel()
        await self.server.stop(grace_s)
        for backend in self.backends.values():
            await backend.aclose()
        if self.cache_client is not None:
            await self.cache_client.close()
        if self.replica_flights is not None:
            await self.replica_flights.aclose()
        if self.health_checks is not None:
            await self.health_checks.aclose()
        self.ledger.close()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
        logger.info("server_stopped", extra={"port": self.port})


async def _set_health(servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE_NAME):
        await servicer.set(name, status)


async def create_server(
    settings: RouterSettings,
    *,
    backends: Mapping[str, ModelBackend] | None = None,
    cache: SemanticCache | None = None,
    classifier: TierClassifier | None = None,
    classifier_loader: ClassifierLoader = load_complexity_classifier,
) -> RunningServer:
    """Bind `settings.address`, start serving and load the classifier.

    `backends` defaults to one backend per configured model and `cache` to a
    gRPC client of `settings.cache.target`. With `classifier` given, the server
    is SERVING when this returns; otherwise `classifier_loader` runs in a
    worker thread and `wait_until_serving` waits for it.

    Raises:
        ConfigError: a model's API key variable is not set.
        AddressInUseError: another process listens on `settings.address` or
            `settings.metrics_address`.
        RuntimeError: the address cannot be bound for another reason.
    """
    if backends is None:
        backends = {
            name: build_backend(model) for name, model in settings.models.items()
        }
    cache_client = None
    if cache is None:
        cache_client = CacheClient(
            settings.cache.target,
            settings.cache.timeout_s,
            credentials=cache_channel_credentials(settings.cache),
            api_key=cache_api_key(settings.cache),
        )
        cache = cache_client
    metrics = RouterMetrics(max_tenants=settings.metrics_max_tenants)
    ledger = CostLedger(settings.ledger_path)
    if settings.ledger_path is None:
        logger.warning(
            "ledger_in_memory",
            extra={"remedy": "set [ledger] path to keep costs across restarts"},
        )
    quotas = RequestQuotas(
        settings.limits, ledger, on_store_error=metrics.count_limit_store_error
    )
    await quotas.warn_if_store_unreachable()
    redis_uri = settings.single_flight_redis_uri()
    replica_flights: RedisSingleFlight[ModelAnswer, CacheHit] | None = (
        RedisSingleFlight.from_uri(redis_uri) if redis_uri else None
    )
    router = StreamingRouter(
        settings,
        backends,
        cache,
        accounting=RequestAccounting(ledger, quotas, metrics),
        metrics=metrics,
        replica_flights=replica_flights,
    )

    feedback = AnswerFeedback(cache, ledger, metrics, settings.max_tenant_chars)

    reloader = ClassifierReloader(
        router, classifier_loader, settings.classifier_artifact_dir
    )
    health_checks = RouterHealth(
        router, ledger, cache_client, settings.models, quotas=quotas
    )
    snapshots = LedgerSnapshotWriter(ledger, settings.ledger_backup_dir)

    # The telemetry interceptor comes first, so it also counts and logs the RPCs
    # that later interceptors reject.
    guard = RouterRequestGuard(
        load_key_store(settings.security, settings.address),
        client_names=client_name_check(settings.security.tls_client_allowed_names),
    )
    server = grpc.aio.server(
        interceptors=[RpcTelemetryInterceptor(metrics, SERVICE_NAME), guard],
        options=grpc_limit_options(
            settings.max_message_bytes, settings.max_metadata_bytes
        )
        + EXCLUSIVE_PORT_OPTIONS,
    )
    router_pb2_grpc.add_RouterServiceServicer_to_server(
        RouterServicer(
            router, feedback, reloader, health=health_checks, snapshots=snapshots
        ),
        server,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    await _set_health(health_servicer, serving=False)
    port = bind_port(
        server,
        settings.address,
        settings.security.tls_cert_file,
        settings.security.tls_key_file,
        settings.security.tls_client_ca_file,
    )
    await server.start()

    running = RunningServer(
        server, port, router, health_servicer, backends, cache_client, metrics, ledger
    )
    running.health_checks = health_checks
    running.replica_flights = replica_flights
    running.health_check_interval_s = settings.health_check_interval_s
    if settings.metrics_address:
        try:
            running.metrics_http = start_metrics_http(
                settings.metrics_address, metrics.registry
            )
        except BaseException:
            # Stop the started gRPC server here: left to garbage collection, its
            # shutdown runs after the event loop has closed.
            await running.stop(grace_s=0)
            raise
    logger.info(
        "server_started",
        extra={
            "port": port,
            "cache_target": settings.cache.target,
            "models": ",".join(settings.models),
            "single_flight": "replicas" if replica_flights else "process",
        },
    )
    if classifier is not None:
        await _classifier_ready(running, classifier)
    else:
        running.loader = asyncio.create_task(
            _load_classifier(
                running, classifier_loader, settings.classifier_artifact_dir
            )
        )
        if settings.classifier_watch_interval_s > 0:
            running.watcher = asyncio.create_task(
                _watch_classifier(running, reloader, settings)
            )
    return running


async def _classifier_ready(running: RunningServer, classifier: TierClassifier) -> None:
    running.router.attach_classifier(classifier)
    await _start_health_monitor(running)
    logger.info("classifier_loaded", extra={"version": classifier.version})
    running._ready.set()


async def _start_health_monitor(running: RunningServer) -> None:
    """Publish the first check's verdict, then re-check in the background."""
    checks = running.health_checks
    if checks is None:
        await _set_health(running.health, serving=True)
        return
    report = await checks.check_critical()
    await _set_health(running.health, serving=report.serving)
    if not report.serving:
        logger.warning("health_changed", extra={"problems": report.failing()})

    async def publish(serving: bool) -> None:
        await _set_health(running.health, serving=serving)

    running.monitor = asyncio.create_task(
        monitor_health(
            checks.check_critical,
            publish,
            running.health_check_interval_s,
            serving=report.serving,
        )
    )


async def _load_classifier(
    running: RunningServer, loader: ClassifierLoader, artifact_dir: Path | None
) -> None:
    try:
        classifier = await asyncio.to_thread(loader, artifact_dir)
    except Exception as error:
        running.load_error = error
        if running.health_checks is not None:
            running.health_checks.record_load_failure(error)
        _log_load_failure(error, artifact_dir)
        running._ready.set()
        return
    await _classifier_ready(running, classifier)


def _log_load_failure(error: Exception, artifact_dir: Path | None) -> None:
    """Log why the classifier failed to load, with a traceback only if unexpected."""
    from router_service.classifier import ClassifierArtifactError

    fields = {"error": str(error), "artifact_dir": str(artifact_dir or "")}
    if isinstance(error, ClassifierArtifactError):
        # The message names the file and the fix, so a traceback adds nothing.
        logger.error("classifier_load_failed", extra=fields)
    else:
        logger.exception("classifier_load_failed", extra=fields)


async def _watch_classifier(
    running: RunningServer, reloader: ClassifierReloader, settings: RouterSettings
) -> None:
    # Watching starts once the first artifact has loaded.
    await running._ready.wait()
    if running.load_error is not None:
        return
    from router_service.classifier import default_artifact_dir

    directory = settings.classifier_artifact_dir or default_artifact_dir()
    interval_s = settings.classifier_watch_interval_s
    await ArtifactWatcher(reloader, directory, interval_s).run()
