"""Tests of the SQLite cost ledger and the daily cost alert."""

from __future__ import annotations

from pathlib import Path

import pytest

from router_service.ledger import SECONDS_PER_DAY, CostAlert, CostLedger, LedgerEntry

DAY_ONE = 1_700_006_400.0  # 00:00 UTC


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def entry(
    created_at: float,
    tenant: str = "acme",
    cost: float = 1.0,
    baseline: float = 3.0,
    status: str = "miss",
) -> LedgerEntry:
    return LedgerEntry(
        created_at=created_at,
        request_id=f"r{created_at}",
        tenant=tenant,
        user="u1",
        tier="simple",
        model="m",
        cache_status=status,
        degraded=False,
        input_tokens=10,
        output_tokens=5,
        cost_usd=cost,
        baseline_cost_usd=baseline,
        latency_ms=12.0,
    )


def test_ledger_rows_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = CostLedger(path)
    ledger.record(entry(DAY_ONE))
    ledger.close()

    reopened = CostLedger(path)
    savings = reopened.savings()
    reopened.close()

    assert savings.requests == 1
    assert savings.cost_usd == pytest.approx(1.0)


def test_spent_today_counts_only_today_and_tenant() -> None:
    clock = Clock(DAY_ONE + 3600)
    ledger = CostLedger(None, clock=clock)
    ledger.record(entry(DAY_ONE - 60, cost=5.0))
    ledger.record(entry(DAY_ONE + 60, cost=1.5))
    ledger.record(entry(DAY_ONE + 120, tenant="other", cost=9.0))

    assert ledger.spent_today("acme") == pytest.approx(1.5)
    assert ledger.spent_today("other") == pytest.approx(9.0)


def test_savings_compares_with_complex_baseline() -> None:
    ledger = CostLedger(None, clock=Clock(DAY_ONE))
    ledger.record(entry(DAY_ONE, cost=1.0, baseline=3.0))
    ledger.record(entry(DAY_ONE, cost=0.0, baseline=3.0, status="exact_hit"))
    savings = ledger.savings("acme")

    assert savings.requests == 2
    assert savings.cost_usd == pytest.approx(1.0)
    assert savings.baseline_cost_usd == pytest.approx(6.0)
    assert savings.saved_usd == pytest.approx(5.0)


def test_daily_costs_fill_empty_days_with_zero() -> None:
    clock = Clock(DAY_ONE + 2 * SECONDS_PER_DAY + 10)
    ledger = CostLedger(None, clock=clock)
    ledger.record(entry(DAY_ONE + 5, cost=2.0))
    ledger.record(entry(DAY_ONE + 2 * SECONDS_PER_DAY + 1, cost=0.5))

    assert ledger.daily_costs(3) == [2.0, 0.0, 0.5]


def history_ledger(today_cost: float) -> tuple[CostLedger, Clock]:
    clock = Clock(DAY_ONE + 7 * SECONDS_PER_DAY + 3600)
    ledger = CostLedger(None, clock=clock)
    for day in range(7):
        ledger.record(entry(DAY_ONE + day * SECONDS_PER_DAY + 60, cost=1.0))
    ledger.record(entry(clock.now - 60, cost=today_cost))
    return ledger, clock


def test_cost_alert_fires_once_over_twice_average() -> None:
    ledger, _ = history_ledger(today_cost=2.5)
    alerts: list[tuple[float, float]] = []
    alert = CostAlert(ledger, on_alert=lambda today, avg: alerts.append((today, avg)))

    assert alert.check()
    assert not alert.check()
    assert alerts == [(2.5, 1.0)]


def test_cost_alert_quiet_below_twice_average() -> None:
    ledger, _ = history_ledger(today_cost=1.9)

    assert not CostAlert(ledger).check()


def test_cost_alert_quiet_without_history() -> None:
    ledger = CostLedger(None, clock=Clock(DAY_ONE + 60))
    ledger.record(entry(DAY_ONE + 30, cost=100.0))

    assert not CostAlert(ledger).check()
