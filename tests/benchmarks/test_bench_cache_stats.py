"""Tests of the bench-cache rates: Wilson intervals, the threshold sweep, timing."""

from __future__ import annotations

import math
import os
import threading

import pytest

from benchmarks.bench_cache_profile import summarize_profile
from benchmarks.bench_cache_stats import (
    PairOutcome,
    percentile,
    rates_at,
    served_at,
    sweep,
    threshold_grid,
    wilson_interval,
)
from benchmarks.bench_cache_timing import cpu_seconds, measure_clients, speed_from_json


@pytest.mark.parametrize(
    ("count", "total", "low", "high"),
    [
        # Reference values from the closed-form Wilson score interval, z = 1.96.
        (5, 10, 0.2366, 0.7634),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (1, 100, 0.0018, 0.0545),
    ],
    ids=["half", "none", "all", "rare"],
)
def test_wilson_interval_matches_reference(
    count: int, total: int, low: float, high: float
) -> None:
    interval = wilson_interval(count, total)
    assert interval.rate == pytest.approx(count / total)
    assert interval.low == pytest.approx(low, abs=5e-4)
    assert interval.high == pytest.approx(high, abs=5e-4)


def test_wilson_interval_of_empty_sample_is_unit_range() -> None:
    interval = wilson_interval(0, 0)
    assert (interval.low, interval.high) == (0.0, 1.0)
    assert interval.total == 0


def test_served_at_keeps_hits_up_to_their_cosine() -> None:
    semantic = PairOutcome(same_meaning=True, hit=True, similarity=0.87)
    assert served_at(semantic, 0.70)
    assert served_at(semantic, 0.87)
    assert not served_at(semantic, 0.88)


def test_served_at_never_serves_guard_rejection_or_miss() -> None:
    rejected = PairOutcome(same_meaning=False, hit=False, similarity=0.0)
    below = PairOutcome(same_meaning=False, hit=False, similarity=0.65)
    for threshold in (0.70, 0.85, 0.95):
        assert not served_at(rejected, threshold)
        assert not served_at(below, threshold)


def test_exact_hit_is_served_at_every_threshold() -> None:
    exact = PairOutcome(same_meaning=True, hit=True, similarity=1.0)
    assert all(
        served_at(exact, threshold) for threshold in threshold_grid(0.7, 0.95, 0.01)
    )


def test_rates_count_positives_and_negatives_apart() -> None:
    outcomes = [
        PairOutcome(True, True, 0.95),
        PairOutcome(True, True, 0.80),
        PairOutcome(True, False, 0.60),
        PairOutcome(False, True, 0.90),
        PairOutcome(False, False, 0.0),
    ]
    rates = rates_at(outcomes, 0.85)
    assert (rates.hit_rate.count, rates.hit_rate.total) == (1, 3)
    assert (rates.false_hit_rate.count, rates.false_hit_rate.total) == (1, 2)
    assert (rates.precision.count, rates.precision.total) == (1, 2)


def test_sweep_rates_never_rise_with_threshold() -> None:
    outcomes = [
        PairOutcome(index % 3 != 0, index % 2 == 0, 0.70 + index * 0.01)
        for index in range(26)
    ]
    results = sweep(outcomes, threshold_grid(0.70, 0.95, 0.01))
    hit_rates = [rates.hit_rate.rate for rates in results]
    false_hit_rates = [rates.false_hit_rate.rate for rates in results]
    assert hit_rates == sorted(hit_rates, reverse=True)
    assert false_hit_rates == sorted(false_hit_rates, reverse=True)


def test_threshold_grid_includes_both_ends() -> None:
    grid = threshold_grid(0.70, 0.95, 0.05)
    assert grid == [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


def test_percentile_uses_nearest_rank() -> None:
    samples = [float(value) for value in range(1, 101)]
    assert percentile(samples, 0.50) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert math.isnan(percentile([], 0.5))


def test_measure_clients_counts_hits_and_errors() -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def lookup(query: str) -> bool:
        with lock:
            seen.append(query)
        if query == "boom":
            raise RuntimeError("lookup failed")
        return query.startswith("hit")

    queries = ["hit-1", "miss-1", "boom", "hit-2", "miss-2"]
    result = measure_clients(lookup, queries, clients=3)
    assert sorted(seen) == sorted(queries)
    assert result.lookups == 4
    assert result.errors == 1
    assert result.error_types == {"RuntimeError": 1}
    assert result.hits == 2
    assert result.p50_ms <= result.p99_ms


def test_speed_result_round_trips_through_json() -> None:
    result = measure_clients(lambda query: True, ["a", "b"], clients=1)
    assert speed_from_json(result.to_json()) == result


def test_measure_clients_rejects_zero_clients() -> None:
    with pytest.raises(ValueError, match="clients must be at least 1"):
        measure_clients(lambda query: True, ["a"], clients=0)


def test_cpu_seconds_reads_own_process() -> None:
    spent = cpu_seconds(os.getpid())
    assert spent is not None
    assert spent > 0


def test_cpu_seconds_of_missing_process_is_none() -> None:
    # Above the largest pid Linux allows (2**22), so no such process exists.
    assert cpu_seconds(2**31 - 1) is None


def test_measure_clients_reports_cpu_per_lookup() -> None:
    result = measure_clients(lambda query: True, ["a", "b", "c"], 2, os.getpid())
    assert result.client_cpu_ms is not None
    assert result.server_cpu_ms is not None
    assert result.client_cpu_ms >= 0


def test_speed_result_without_cpu_fields_is_read() -> None:
    document = measure_clients(lambda query: True, ["a"], clients=1).to_json()
    del document["client_cpu_ms"]
    del document["server_cpu_ms"]
    del document["error_types"]
    result = speed_from_json(document)
    assert result.client_cpu_ms is None
    assert result.lookups == 1


def test_profile_summary_sums_lines_of_a_function() -> None:
    raw = "\n".join(
        [
            "main (app.py:1);lookup (cache.py:10);Session.run (ort/session.py:406) 6",
            "main (app.py:1);lookup (cache.py:12);Session.run (ort/session.py:406) 2",
            "main (app.py:1);lookup (cache.py:20) 2",
            "",
            "not a stack line",
        ]
    )
    summary = summarize_profile(raw)
    assert summary[0] == ["Session.run (ort/session.py)", 0.8]
    assert summary[1] == ["lookup (cache.py)", 0.2]
    assert len(summary) == 2


def test_profile_summary_of_empty_output_is_empty() -> None:
    assert summarize_profile("") == []
