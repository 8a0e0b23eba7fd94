"""Tests of the log throttle shared by both services."""

from __future__ import annotations

import threading

from cache_service.log_throttle import LogThrottle
from cache_service.testing import ManualClock


def test_first_line_passes_and_later_ones_are_counted() -> None:
    clock = ManualClock()
    throttle = LogThrottle(10.0, clock)

    assert throttle.admit() == 0
    assert throttle.admit() is None
    clock.advance(9.9)
    assert throttle.admit() is None
    clock.advance(0.1)
    assert throttle.admit() == 2
    assert throttle.admit() is None


def test_count_restarts_after_each_admitted_line() -> None:
    clock = ManualClock()
    throttle = LogThrottle(1.0, clock)
    throttle.admit()
    throttle.admit()
    clock.advance(1.0)
    assert throttle.admit() == 1
    clock.advance(1.0)

    assert throttle.admit() == 0


def test_threads_share_one_line_per_interval() -> None:
    clock = ManualClock()
    throttle = LogThrottle(60.0, clock)
    results: list[int | None] = []
    lock = threading.Lock()

    def call() -> None:
        outcome = throttle.admit()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    clock.advance(60.0)

    assert results.count(0) == 1
    assert results.count(None) == 15
    assert throttle.admit() == 15
