"""Tests of the profile helper's aggregation of py-spy's raw stacks."""

from __future__ import annotations

import pytest

from benchmarks.bench_load_profile import busy_shares

RAW = [
    "main (app.py:10);handle (app.py:20);predict (model.py:5) 6",
    "main (app.py:10);handle (app.py:21);lookup (client.py:7) 2",
    "main (app.py:10);run (loop.py:3);EpollSelector.select (selectors.py:468) 50",
    "worker (pool.py:9);_worker (concurrent/futures/thread.py:81) 40",
    "main (app.py:10);recurse (r.py:1);recurse (r.py:2) 2",
    "",
]


def test_busy_shares_skip_idle_samples() -> None:
    busy, _ = busy_shares(RAW)

    assert busy == 10


def test_busy_shares_merge_lines_of_one_function() -> None:
    _, shares = busy_shares(RAW)
    by_name = dict(shares)

    assert by_name["main (app.py)"] == 1.0
    assert by_name["handle (app.py)"] == pytest.approx(0.8)
    assert by_name["predict (model.py)"] == pytest.approx(0.6)
    assert by_name["recurse (r.py)"] == pytest.approx(0.2)
    assert "EpollSelector.select (selectors.py)" not in by_name


def test_busy_shares_of_idle_profile_are_empty() -> None:
    busy, shares = busy_shares(RAW[2:4])

    assert busy == 0
    assert shares == []
