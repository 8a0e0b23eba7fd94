"""Tests of the scale benchmark: its vectors, recall helpers and a tiny run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_scale_data import (
    SearchTimes,
    normalized,
    planted_vectors,
    recall_at_1,
    recall_at_1_where,
    stored_vectors,
    time_searches,
)

REPO = Path(__file__).resolve().parents[2]


def test_stored_vectors_are_unit_length_and_near_centres() -> None:
    centres = normalized(np.random.default_rng(0).standard_normal((5, 384)))

    vectors = stored_vectors(1000, 384, centres, seed=1)

    assert vectors.shape == (1000, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    best_cosine = (vectors @ centres.T).max(axis=1)
    assert best_cosine.min() > 0.85
    assert best_cosine.max() < 0.99


def test_uniform_vectors_have_no_close_pairs() -> None:
    vectors = stored_vectors(200, 384, None, seed=2)

    cosines = vectors @ vectors.T
    np.fill_diagonal(cosines, 0.0)

    assert np.abs(cosines).max() < 0.4


def test_recall_at_1_counts_matching_first_ids() -> None:
    exact = np.array([[3, 1], [4, 2], [7, 0]], dtype=np.int64)
    found = [[3, 9], [2, 4], []]

    assert recall_at_1(found, exact) == 1 / 3
    mask = np.array([True, True, False])
    assert recall_at_1_where(found, exact, mask) == 0.5
    assert recall_at_1_where(found, exact, np.zeros(3, dtype=bool)) is None


def test_hits_kept_counts_results_above_threshold() -> None:
    timed = SearchTimes(
        latencies_ms=[1.0, 1.0, 1.0],
        results=[[(1, 0.9)], [(2, 0.8)], [(3, 0.95)]],
    )

    kept = timed.hits_kept(0.85, np.array([True, True, False]))

    assert kept == 0.5


def test_time_searches_times_every_probe() -> None:
    probes = normalized(np.random.default_rng(3).standard_normal((4, 8)))

    timed = time_searches(lambda query: [(0, float(query[0, 0]))], probes)

    assert len(timed.latencies_ms) == 4
    assert timed.top_ids == [[0]] * 4


def test_bench_scale_writes_report_for_small_sizes(
    data_dir: Path, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_scale",
        "--sizes",
        "500,1000",
        "--centres",
        "100",
        "--probes",
        "20",
        "--data-dir",
        str(data_dir),
        "--out-dir",
        str(tmp_path),
    ]
    finished = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr

    report = json.loads((tmp_path / "bench-scale.json").read_text())
    assert [result["size"] for result in report["results"]] == [500, 1000]
    for result in report["results"]:
        rows = {(row["index"], row["setting"]): row for row in result["rows"]}
        assert rows[("flat", "IndexFlatIP")]["recall_at_1"] == 1.0
        assert rows[("cache VectorIndex", "flat")]["recall_at_1"] == 1.0
        assert any(index == "IVF" for index, _ in rows)
        assert any(index == "HNSW" for index, _ in rows)
        for row in result["rows"]:
            assert 0.0 <= row["recall_at_1"] <= 1.0
            assert row["search_p50_ms"] > 0
    markdown = (tmp_path / "bench-scale.md").read_text()
    assert markdown.startswith("# Scale benchmark")
    assert "## 1,000 vectors" in markdown


def test_planted_vectors_keep_one_copy_per_centre() -> None:
    centres = normalized(np.random.default_rng(4).standard_normal((10, 384)))

    vectors = planted_vectors(500, 384, centres, seed=5)

    best_cosine = (vectors @ centres.T).max(axis=0)
    close_rows = ((vectors @ centres.T) > 0.85).sum(axis=0)
    assert vectors.shape == (500, 384)
    assert best_cosine.min() > 0.85
    assert close_rows.tolist() == [1] * 10


def test_planted_vectors_need_room_for_centres() -> None:
    centres = normalized(np.random.default_rng(4).standard_normal((10, 384)))

    with pytest.raises(ValueError, match="smaller than 10 centres"):
        planted_vectors(5, 384, centres, seed=5)
