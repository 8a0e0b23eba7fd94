"""Dependency checks of the cache service, and the thread that re-runs them.

The embedding model and the entry store are critical: when either fails, the
service reports NOT_SERVING through ``grpc.health.v1``. Memory use is reported
for information. ``HealthMonitor`` re-runs the checks every few seconds, so the
status returns to SERVING once the dependency recovers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cache_service.cache import SemanticCache
from cache_service.errors import StorageError
from cache_service.health_report import (
    CheckStatus,
    HealthReport,
    check_memory,
    run_check,
)
from cache_service.persistence import SqliteEntryStore

logger = logging.getLogger(__name__)

# How long the store probe waits for SQLite's write lock before it fails.
STORE_PROBE_TIMEOUT_S = 1.0
_PROBE_TEXT = "health check"


class CacheHealth:
    """Checks the embedding model, the entry store and memory of one cache."""

    def __init__(self, durable: bool) -> None:
        self._durable = durable
        self._cache: SemanticCache | None = None
        self._store: SqliteEntryStore | None = None
        self._load_error: BaseException | None = None

    def attach(self, cache: SemanticCache, store: SqliteEntryStore | None) -> None:
        """Check ``cache`` and ``store`` from now on; called once they are loaded."""
        self._store = store
        self._cache = cache

    def record_load_failure(self, error: BaseException) -> None:
        """Report the model or the store as failed to load."""
        self._load_error = error

    def check(self) -> HealthReport:
        """Run every check. Never raises: a failure is a FAILING result."""
        return HealthReport(
            (
                run_check("embedding_model", True, self._check_embedding),
                run_check("entry_store", True, self._check_store),
                run_check("memory", False, check_memory),
            )
        )

    def _check_embedding(self) -> tuple[CheckStatus, str]:
        cache = self._cache
        if cache is None:
            return CheckStatus.FAILING, self._not_loaded("the embedding model")
        embedder = cache.embedder
        vectors = embedder.embed([_PROBE_TEXT])
        if vectors.shape != (1, embedder.dimension):
            return (
                CheckStatus.FAILING,
                f"a probe embedding has shape {vectors.shape}; expected "
                f"(1, {embedder.dimension})",
            )
        return CheckStatus.OK, f"{embedder.model_name}, {embedder.dimension} dimensions"

    def _check_store(self) -> tuple[CheckStatus, str]:
        if not self._durable:
            return CheckStatus.OK, "in memory only (data_dir is empty)"
        if self._cache is None:
            return CheckStatus.FAILING, self._not_loaded("the entry store")
        if self._store is None:
            return CheckStatus.FAILING, "the entry store is not open"
        try:
            self._store.check_writable(STORE_PROBE_TIMEOUT_S)
        except StorageError as error:
            return CheckStatus.FAILING, str(error)
        # DEGRADED, not FAILING: lookups still work, and a service that is not
        # SERVING receives no store that could prove the fault gone.
        failure = self._store.write_failure
        if failure is not None:
            failed_at, message = failure
            return (
                CheckStatus.DEGRADED,
                f"the last entry write failed {time.time() - failed_at:.0f} s ago "
                f"({message}), although a probe write succeeded; see the "
                "storage_failed log line",
            )
        return CheckStatus.OK, "SQLite accepts writes"

    def _not_loaded(self, what: str) -> str:
        if self._load_error is not None:
            return f"{what} failed to load: {type(self._load_error).__name__}"
        return f"{what} is still loading"


class HealthMonitor:
    """Re-runs ``check`` every ``interval_s`` on a daemon thread.

    ``on_report`` receives every report. A change between serving and not
    serving is logged as ``health_changed``: a WARNING with the failing checks
    when the service stops serving, an INFO line when it recovers.
    """

    def __init__(
        self,
        check: Callable[[], HealthReport],
        on_report: Callable[[HealthReport], None],
        interval_s: float,
    ) -> None:
        self._check = check
        self._on_report = on_report
        self._interval_s = interval_s
        self._stopping = threading.Event()
        self._serving: bool | None = None
        self._thread = threading.Thread(
            target=self._run, name="cache-health", daemon=True
        )

    def run_once(self) -> HealthReport:
        """Run the checks now, publish the report and return it."""
        report = self._check()
        if report.serving != self._serving:
            fields = {"serving": report.serving, "problems": report.failing()}
            if report.serving:
                logger.info("health_changed", extra=fields)
            else:
                logger.warning("health_changed", extra=fields)
            self._serving = report.serving
        self._on_report(report)
        return report

    def start(self) -> None:
        """Start re-running the checks in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread after its current run."""
        self._stopping.set()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                self.run_once()
            except Exception:
                # The next run retries; the last published status stays.
                logger.exception("health_check_failed")
