"""Tests of the GPTCache threshold mapping and of reading its runner's output.

GPTCache itself is installed only in .venv-bench, which the test suite does not
build. These tests cover our side: the mapping, re-derived from GPTCache's scoring
rule on real vectors, the files exchanged with the runner, and the skip logic.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from benchmarks.gptcache_compare import run_gptcache
from benchmarks.gptcache_mapping import (
    RUNNER_FORMAT,
    cosine_from_distance,
    cosine_from_hit_score,
    cosine_from_threshold,
    gptcache_threshold,
    parse_runner_output,
    runner_input,
)


def gptcache_serves(query: np.ndarray, stored: np.ndarray, threshold: float) -> bool:
    """GPTCache 0.1.44's rule: rank = 4 - squared L2, served when rank >= 4 * t."""
    distance = float(np.sum((query - stored) ** 2))
    rank = 4.0 - min(max(distance, 0.0), 4.0)
    return rank >= 4.0 * threshold


def test_default_threshold_maps_to_gptcache_0_925() -> None:
    assert gptcache_threshold(0.85) == pytest.approx(0.925)
    assert cosine_from_threshold(0.925) == pytest.approx(0.85)
    # GPTCache's own default of 0.8 serves from a cosine of 0.6.
    assert cosine_from_threshold(0.8) == pytest.approx(0.6)


def test_mapping_gives_same_decisions_as_gptcache_rule() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal(384)
    base /= np.linalg.norm(base)
    for cosine_threshold in (0.70, 0.80, 0.85, 0.90, 0.95):
        for _ in range(200):
            noise = rng.standard_normal(384) * rng.uniform(0.01, 0.2)
            other = base + noise
            other /= np.linalg.norm(other)
            cosine = float(base @ other)
            if abs(cosine - cosine_threshold) < 1e-6:
                continue
            served = gptcache_serves(other, base, gptcache_threshold(cosine_threshold))
            assert served == (cosine >= cosine_threshold)


def test_distance_and_hit_score_recover_cosine() -> None:
    rng = np.random.default_rng(1)
    first, second = rng.standard_normal((2, 64))
    first /= np.linalg.norm(first)
    second /= np.linalg.norm(second)
    cosine = float(first @ second)
    distance = float(np.sum((first - second) ** 2))
    rank = 4.0 - distance
    assert cosine_from_distance(distance) == pytest.approx(cosine, abs=1e-9)
    assert cosine_from_hit_score(rank / 4.0) == pytest.approx(cosine, abs=1e-9)


def test_distance_is_clipped_like_gptcache() -> None:
    assert cosine_from_distance(-1e-6) == 1.0
    assert cosine_from_distance(5.0) == -1.0


def test_threshold_outside_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="cosine must be between -1 and 1"):
        gptcache_threshold(1.5)
    with pytest.raises(ValueError, match="similarity_threshold must be between 0"):
        cosine_from_threshold(-0.1)


def test_runner_input_carries_mapped_thresholds() -> None:
    document = runner_input([], 0.70, ["stored"], ["query"], [1, 32], 0.85)
    assert document["format"] == RUNNER_FORMAT
    assert document["replay_similarity_threshold"] == pytest.approx(0.85)
    assert document["speed"]["similarity_threshold"] == pytest.approx(0.925)
    assert document["speed"]["clients"] == [1, 32]


def runner_output(**overrides: Any) -> dict[str, Any]:
    speed_run = {
        "clients": 1,
        "lookups": 10,
        "errors": 0,
        "hits": 4,
        "wall_s": 0.5,
        "lookups_per_s": 20.0,
        "p50_ms": 40.0,
        "p99_ms": 90.0,
    }
    document = {
        "format": RUNNER_FORMAT,
        "gptcache_version": "0.1.44",
        "embedding": "onnx",
        "embedding_check_min_cosine": 0.99999,
        "replay_similarity_threshold": 0.85,
        "pairs": [
            {"set": "quora_qqp", "same_meaning": True, "hit": True, "hit_score": 0.95},
            {"set": "quora_qqp", "same_meaning": False, "hit": False, "hit_score": 0.0},
            {"set": "stsb", "same_meaning": True, "hit": True, "hit_score": 1.0},
        ],
        "speed": {"onnx": [speed_run]},
    }
    document.update(overrides)
    return document


def test_runner_output_becomes_pair_outcomes() -> None:
    results = parse_runner_output(runner_output())
    quora = results.outcomes["quora_qqp"]
    assert [item.hit for item in quora] == [True, False]
    assert quora[0].similarity == pytest.approx(0.90)
    assert quora[1].similarity == 0.0
    assert results.outcomes["stsb"][0].similarity == pytest.approx(1.0)
    assert results.speed["onnx"][0].lookups_per_s == 20.0
    assert results.gptcache_version == "0.1.44"


def test_runner_output_of_other_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="format 99, expected 1"):
        parse_runner_output(runner_output(format=99))


def test_runner_output_missing_field_is_rejected() -> None:
    document = runner_output()
    del document["pairs"][0]["hit"]
    with pytest.raises(ValueError, match="runner output is invalid: KeyError"):
        parse_runner_output(document)


def compare_args(tmp_path: Path, mode: str) -> argparse.Namespace:
    return argparse.Namespace(
        gptcache=mode,
        gptcache_python=tmp_path / "missing" / "python",
        thresholds=[0.70, 0.85],
        client_counts=[1],
        threshold=0.85,
        onnx_dir=tmp_path,
        gptcache_embeddings="onnx",
        py_spy=None,
        gptcache_dir=None,
    )


def test_missing_bench_environment_is_skipped_with_reason(tmp_path: Path) -> None:
    console = Console(file=None, quiet=True)
    section = run_gptcache([], None, compare_args(tmp_path, "auto"), tmp_path, console)
    assert section["status"].startswith("skipped: ")
    assert "make bench-venv" in section["status"]


def test_missing_bench_environment_fails_when_forced(tmp_path: Path) -> None:
    console = Console(file=None, quiet=True)
    with pytest.raises(
        RuntimeError, match=r"GPTCache cannot run: skipped: .* does not"
    ):
        run_gptcache([], None, compare_args(tmp_path, "on"), tmp_path, console)


def test_gptcache_off_is_skipped(tmp_path: Path) -> None:
    console = Console(file=None, quiet=True)
    section = run_gptcache([], None, compare_args(tmp_path, "off"), tmp_path, console)
    assert section == {"status": "skipped: --gptcache off"}
