"""Cost ledger: one durable SQLite row per finished request.

Each row keeps who asked (tenant, user), how the request was served (tier,
model, cache status, degraded), the tokens, the list-price cost, the baseline
cost on the complex tier without a cache, and the latency. Days are UTC days.

Several router processes can share one file, but SQLite lets one writer in
at a time, so many replicas writing one file wait on its lock. Each open ledger
takes a shared ``flock`` on ``<file>.lock``, so that a restore (which takes it
exclusively) can tell that a router has the file open.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from cache_service.sqlite_files import lock_file
from router_service.errors import BackupError, StorageError

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
IN_MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    created_at REAL NOT NULL,
    request_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    tier TEXT NOT NULL,
    model TEXT NOT NULL,
    cache_status TEXT NOT NULL,
    degraded INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    baseline_cost_usd REAL NOT NULL,
    latency_ms REAL NOT NULL,
    cache_entry_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS requests_by_tenant_time ON requests (tenant, created_at);
CREATE INDEX IF NOT EXISTS requests_by_time ON requests (created_at);
CREATE INDEX IF NOT EXISTS requests_by_request_id ON requests (request_id);
"""
# Written by the health check; one row, rewritten on every check.
_PROBE_TABLE = (
    "CREATE TABLE IF NOT EXISTS health_probe "
    "(id INTEGER PRIMARY KEY, checked_at REAL NOT NULL)"
)
# Columns added after the first release, with their definitions. A ledger file
# written by an older router gets them when it is opened.
_ADDED_COLUMNS = {"cache_entry_id": "TEXT NOT NULL DEFAULT ''"}


@dataclass(frozen=True)
class LedgerEntry:
    """One finished request; `created_at` is a Unix time in seconds."""

    created_at: float
    request_id: str
    tenant: str
    user: str
    tier: str
    model: str
    cache_status: str
    degraded: bool
    input_tokens: int
    output_tokens: int
    cost_usd: float
    baseline_cost_usd: float
    latency_ms: float
    # The cache entry that served the answer or stored it; empty when none did.
    cache_entry_id: str = ""


@dataclass(frozen=True)
class Savings:
    """Total cost against the cost of sending everything to the complex tier."""

    requests: int
    cost_usd: float
    baseline_cost_usd: float

    @property
    def saved_usd(self) -> float:
        """Baseline minus actual cost."""
        return self.baseline_cost_usd - self.cost_usd


class CostLedger:
    """Records requests in SQLite; every method is safe to call from any thread."""

    def __init__(
        self, path: Path | None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _lock_shared(path)
        self._connection = sqlite3.connect(
            str(path) if path is not None else IN_MEMORY, check_same_thread=False
        )
        with self._lock, self._connection:
            if path is not None:
                # WAL lets readers run while a request is being written.
                self._connection.execute("PRAGMA journal_mode=WAL")
        with self._lock:
            _add_missing_columns(self._connection)
            self._connection.executescript(_SCHEMA)
        self._file_identity = None if path is None else _identity(path)

    def record(self, entry: LedgerEntry) -> None:
        """Insert one request; the row is committed when this returns."""
        columns = ", ".join(f.name for f in fields(LedgerEntry))
        placeholders = ", ".join("?" for _ in fields(LedgerEntry))
        with self._lock, self._connection:
            self._connection.execute(
                f"INSERT INTO requests ({columns}) VALUES ({placeholders})",
                astuple(entry),
            )

    def cache_entry_id(self, request_id: str, tenant: str) -> str | None:
        """Return the cache entry id recorded for a request of `tenant`.

        Returns "" when the request's answer was not cached, and None when the
        ledger has no request with this id for `tenant`.
        """
        with self._lock:
            row = self._connection.execute(
                "SELECT cache_entry_id FROM requests "
                "WHERE request_id = ? AND tenant = ? LIMIT 1",
                (request_id, tenant),
            ).fetchone()
        return None if row is None else str(row[0])

    def day_start(self, days_ago: int = 0) -> float:
        """Return the Unix time of 00:00 UTC, `days_ago` days before today."""
        now = self._clock()
        return (now // SECONDS_PER_DAY - days_ago) * SECONDS_PER_DAY

    def spent_today(self, tenant: str, user: str | None = None) -> float:
        """Return the cost in USD since 00:00 UTC of a tenant, or of one user."""
        query = (
            "SELECT COALESCE(SUM(cost_usd), 0) FROM requests "
            "WHERE tenant = ? AND created_at >= ?"
        )
        parameters: tuple[str | float, ...] = (tenant, self.day_start())
        if user is not None:
            query += " AND user = ?"
            parameters = (*parameters, user)
        with self._lock:
            row = self._connection.execute(query, parameters).fetchone()
        return float(row[0])

    def daily_costs(self, days: int) -> list[float]:
        """Return the total cost of each of the last `days` UTC days, oldest first.

        The last value is today so far; days without requests count as 0.
        """
        start = self.day_start(days - 1)
        with self._lock:
            rows = self._connection.execute(
                "SELECT CAST((created_at - ?) / ? AS INTEGER), SUM(cost_usd) "
                "FROM requests WHERE created_at >= ? GROUP BY 1",
                (start, SECONDS_PER_DAY, start),
            ).fetchall()
        totals = [0.0] * days
        for day_index, cost in rows:
            if 0 <= day_index < days:
                totals[day_index] = float(cost)
        return totals

    def savings(self, tenant: str | None = None) -> Savings:
        """Return the request count, cost and baseline over the whole ledger."""
        query = (
            "SELECT COUNT(*), COALESCE(SUM(cost_usd), 0), "
            "COALESCE(SUM(baseline_cost_usd), 0) FROM requests"
        )
        parameters: tuple[str, ...] = ()
        if tenant is not None:
            query += " WHERE tenant = ?"
            parameters = (tenant,)
        with self._lock:
            count, cost, baseline = self._connection.execute(
                query, parameters
            ).fetchone()
        return Savings(int(count), float(cost), float(baseline))

    def check_writable(self, timeout_s: float) -> None:
        """Commit a probe row through a second connection to prove writes work.

        Also checks that the file at ``path`` is still the one this ledger
        opened. Waits at most ``timeout_s`` for SQLite's write lock. An in-memory
        ledger always passes.

        Raises:
            StorageError: the file was removed or replaced, or the write failed.
        """
        if self.path is None:
            return
        try:
            identity = _identity(self.path)
        except FileNotFoundError:
            raise StorageError(
                "the ledger file was removed while open, so new rows are lost at "
                "restart; restore it from a snapshot and restart the router"
            ) from None
        if identity != self._file_identity:
            raise StorageError(
                "the ledger file was replaced while open, so the router writes to "
                "the old file; restart the router to open the new one"
            )
        # mode=rw never creates a file, so a vanished ledger is not recreated.
        uri = self.path.resolve().as_uri() + "?mode=rw"
        try:
            probe = sqlite3.connect(uri, uri=True, timeout=timeout_s)
            try:
                with probe:
                    probe.execute(_PROBE_TABLE)
                    probe.execute(
                        "INSERT OR REPLACE INTO health_probe (id, checked_at) "
                        "VALUES (1, ?)",
                        (time.time(),),
                    )
            finally:
                probe.close()
        except sqlite3.Error as error:
            raise StorageError(
                f"a probe write to the ledger failed: {error}"
            ) from error

    def close(self) -> None:
        """Close the database connection and release the file's lock."""
        with self._lock:
            self._connection.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def lock_path(ledger_path: Path) -> Path:
    """Return the lock file that open ledgers share and a restore takes."""
    return ledger_path.with_name(ledger_path.name + ".lock")


def _lock_shared(path: Path) -> int:
    try:
        return lock_file(lock_path(path), exclusive=False)
    except BlockingIOError:
        raise BackupError(
            f"a restore of the ledger {path} is running; start the router after it "
            "finishes"
        ) from None


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    """Add `_ADDED_COLUMNS` to a `requests` table written by an older router.

    The check and the change run in one write transaction, so two routers that
    open the same old file at once do not both add a column.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        rows = connection.execute("PRAGMA table_info(requests)").fetchall()
        existing = {row[1] for row in rows}
        if existing:
            for name, definition in _ADDED_COLUMNS.items():
                if name not in existing:
                    connection.execute(
                        f"ALTER TABLE requests ADD COLUMN {name} {definition}"
                    )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


class CostAlert:
    """Fires when today's cost passes `factor` times the trailing daily average.

    The average covers the `trailing_days` full days before today, so a day
    with no history never alerts. Each instance fires at most once per UTC day,
    so every router process alerts on its own.
    """

    def __init__(
        self,
        ledger: CostLedger,
        *,
        factor: float = 2.0,
        trailing_days: int = 7,
        on_alert: Callable[[float, float], None] | None = None,
    ) -> None:
        self._ledger = ledger
        self._factor = factor
        self._trailing_days = trailing_days
        self._on_alert = on_alert
        self._last_alert_day: float | None = None

    def check(self) -> bool:
        """Compare today's cost with the trailing average; return True on alert."""
        costs = self._ledger.daily_costs(self._trailing_days + 1)
        today, history = costs[-1], costs[:-1]
        average = sum(history) / len(history)
        day = self._ledger.day_start()
        if average <= 0 or today <= self._factor * average:
            return False
        if self._last_alert_day == day:
            return False
        self._last_alert_day = day
        logger.warning(
            "daily_cost_alert",
            extra={
                "today_usd": round(today, 6),
                "trailing_average_usd": round(average, 6),
                "factor": self._factor,
            },
        )
        if self._on_alert is not None:
            self._on_alert(today, average)
        return True
