"""Health check results shared by both services: statuses, one result, a report.

Only the standard library is imported here, so the router can use it without
loading the cache's model code.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

_PROC_STATUS = Path("/proc/self/status")
ReportMessage = TypeVar("ReportMessage")


class CheckStatus(enum.Enum):
    """Outcome of one check, from best to worst."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"


@dataclass(frozen=True)
class CheckResult:
    """One check: a failing critical check makes the service NOT_SERVING."""

    name: str
    status: CheckStatus
    detail: str
    latency_ms: float
    critical: bool


@dataclass(frozen=True)
class HealthReport:
    """Every check of one run."""

    checks: tuple[CheckResult, ...]

    @property
    def serving(self) -> bool:
        """True when no critical check fails."""
        return not any(
            check.critical and check.status is CheckStatus.FAILING
            for check in self.checks
        )

    @property
    def status(self) -> CheckStatus:
        """FAILING when a critical check fails, DEGRADED when any other is not OK."""
        if not self.serving:
            return CheckStatus.FAILING
        if any(check.status is not CheckStatus.OK for check in self.checks):
            return CheckStatus.DEGRADED
        return CheckStatus.OK

    def failing(self) -> dict[str, str]:
        """Map each check that is not OK to its detail."""
        return {
            check.name: check.detail
            for check in self.checks
            if check.status is not CheckStatus.OK
        }


def health_report_to_proto(
    report: HealthReport,
    report_type: Callable[..., ReportMessage],
    check_type: Callable[..., object],
    statuses: Mapping[CheckStatus, int],
) -> ReportMessage:
    """Convert a report to a service's ``HealthReport`` response message.

    The cache and router protos each define HealthReport and HealthCheck messages
    with the same fields, so the caller passes its own message classes and the
    map from ``CheckStatus`` to its proto enum values.
    """
    return report_type(
        status=statuses[report.status],
        serving=report.serving,
        checks=[
            check_type(
                name=check.name,
                status=statuses[check.status],
                detail=check.detail,
                latency_ms=check.latency_ms,
                critical=check.critical,
            )
            for check in report.checks
        ],
    )


def run_check(
    name: str, critical: bool, probe: Callable[[], tuple[CheckStatus, str]]
) -> CheckResult:
    """Time ``probe`` and turn any exception it raises into a FAILING result."""
    started = time.perf_counter()
    try:
        status, detail = probe()
    except Exception as error:
        status, detail = CheckStatus.FAILING, f"{type(error).__name__}: {error}"
    latency_ms = (time.perf_counter() - started) * 1000
    return CheckResult(name, status, detail, round(latency_ms, 3), critical)


def resident_memory_mb() -> float | None:
    """Return this process's resident set size in MiB, or None off Linux."""
    try:
        lines = _PROC_STATUS.read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def check_memory() -> tuple[CheckStatus, str]:
    """Report resident memory; informational, DEGRADED only when unreadable."""
    rss_mb = resident_memory_mb()
    if rss_mb is None:
        return CheckStatus.DEGRADED, "resident memory unknown: no /proc/self/status"
    return CheckStatus.OK, f"resident memory {rss_mb:.0f} MiB"
