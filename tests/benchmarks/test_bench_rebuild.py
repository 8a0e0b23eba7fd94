"""Tests of the background-rebuild benchmark on a small index."""

from __future__ import annotations

import pytest

from benchmarks import bench_rebuild


def test_small_rebuild_is_measured_and_swapped_in() -> None:
    times = bench_rebuild.measure(40_000, dimension=16)

    assert times.vectors_before == 20_000
    assert times.kind_after == "ivf"
    assert times.searches >= 1
    assert times.vectors_after == 40_000 + times.replayed_adds
    assert times.search_p50_ms <= times.search_max_ms


def test_size_below_two_builds_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        bench_rebuild.main(["--size", "1000"])

    assert raised.value.code == 2
    assert "--size must be at least 40000; got 1000" in capsys.readouterr().err
