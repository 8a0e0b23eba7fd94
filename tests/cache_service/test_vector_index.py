"""Tests of VectorIndex against a brute-force NumPy oracle."""

from __future__ import annotations

import numpy as np
import pytest

from cache_service.vector_index import (
    MIN_NPROBE,
    PartitionedIndex,
    VectorIndex,
    nprobe_for_lists,
)

DIMENSION = 32


def _unit_rows(rng: np.random.Generator, count: int) -> np.ndarray:
    rows = rng.standard_normal((count, DIMENSION)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _oracle(
    ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int
) -> list[tuple[int, float]]:
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(ids[i]), float(scores[i])) for i in order]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = _unit_rows(rng, 500)
    ids = rng.choice(10_000_000, size=500, replace=False).astype(np.int64)
    index = VectorIndex(DIMENSION)
    index.add(ids.tolist(), vectors)

    for query in _unit_rows(rng, 20):
        found = index.search(query, 8)
        expected = _oracle(ids, vectors, query, 8)
        assert [entry_id for entry_id, _ in found] == [i for i, _ in expected]
        np.testing.assert_allclose(
            [score for _, score in found], [s for _, s in expected], atol=1e-5
        )


def test_removed_ids_are_never_returned() -> None:
    rng = np.random.default_rng(7)
    vectors = _unit_rows(rng, 200)
    ids = np.arange(1, 201, dtype=np.int64)
    index = VectorIndex(DIMENSION)
    index.add(ids.tolist(), vectors)
    removed = set(range(1, 201, 3))

    assert index.remove(sorted(removed)) == len(removed)

    keep = np.array([i not in removed for i in ids])
    for query in _unit_rows(rng, 20):
        found = index.search(query, 10)
        assert not removed & {entry_id for entry_id, _ in found}
        expected = _oracle(ids[keep], vectors[keep], query, 10)
        assert [entry_id for entry_id, _ in found] == [i for i, _ in expected]


def test_search_of_vector_returns_its_own_id_first() -> None:
    rng = np.random.default_rng(3)
    vectors = _unit_rows(rng, 50)
    index = VectorIndex(DIMENSION)
    index.add(range(100, 150), vectors)
    entry_id, score = index.search(vectors[17], 1)[0]
    assert entry_id == 117
    assert score == pytest.approx(1.0, abs=1e-5)


def test_duplicate_id_is_rejected() -> None:
    rng = np.random.default_rng(4)
    index = VectorIndex(DIMENSION)
    index.add([5], _unit_rows(rng, 1))
    with pytest.raises(ValueError, match="id 5 is already in the index"):
        index.add([5], _unit_rows(rng, 1))


def test_wrong_shape_is_rejected() -> None:
    index = VectorIndex(DIMENSION)
    with pytest.raises(ValueError, match=r"expected vectors of shape \(1, 32\)"):
        index.add([1], np.zeros((1, 16), dtype=np.float32))


def test_empty_index_returns_no_results() -> None:
    index = VectorIndex(DIMENSION)
    assert index.search(np.ones(DIMENSION, dtype=np.float32), 5) == []


def test_removing_unknown_id_counts_zero() -> None:
    index = VectorIndex(DIMENSION)
    assert index.remove([42]) == 0


def test_partition_search_sees_only_its_partition() -> None:
    rng = np.random.default_rng(5)
    vectors = _unit_rows(rng, 2)
    index = PartitionedIndex(DIMENSION)
    index.add("acme", 1, vectors[0])
    index.add("globex", 2, vectors[0])
    index.add("globex", 3, vectors[1])

    assert [entry_id for entry_id, _ in index.search("acme", vectors[0], 5)] == [1]
    assert {entry_id for entry_id, _ in index.search("globex", vectors[0], 5)} == {2, 3}
    assert index.search("initech", vectors[0], 5) == []


def test_partition_is_dropped_with_last_vector() -> None:
    rng = np.random.default_rng(6)
    index = PartitionedIndex(DIMENSION)
    index.add("acme", 1, _unit_rows(rng, 1)[0])
    index.remove("acme", 1)
    index.remove("absent", 9)

    assert len(index) == 0
    assert index.ids_by_partition() == {}


@pytest.mark.parametrize(
    ("lists", "expected"),
    [
        pytest.param(1, 1, id="one-list"),
        pytest.param(10, 10, id="fewer-lists-than-minimum"),
        pytest.param(16, 16, id="minimum"),
        pytest.param(316, 16, id="100k-vectors"),
        pytest.param(512, 16, id="last-at-minimum"),
        pytest.param(513, 17, id="first-above-minimum"),
        pytest.param(1_000, 32, id="1m-vectors"),
        pytest.param(3_163, 99, id="10m-vectors"),
    ],
)
def test_nprobe_grows_with_list_count(lists: int, expected: int) -> None:
    assert nprobe_for_lists(lists) == expected


def test_flat_index_has_no_nprobe() -> None:
    index = VectorIndex(DIMENSION)
    index.add([1], _unit_rows(np.random.default_rng(0), 1))

    assert index.kind == "flat"
    assert index.nprobe is None


@pytest.mark.parametrize("nprobe", [0, -3])
def test_nprobe_below_one_is_rejected(nprobe: int) -> None:
    with pytest.raises(ValueError, match=f"nprobe must be at least 1; got {nprobe}"):
        VectorIndex(DIMENSION, nprobe=nprobe)


def test_large_ivf_index_probes_more_than_minimum() -> None:
    # 264,000 vectors give round(sqrt(n)) = 514 lists, just past the 512 up to
    # which the rule probes MIN_NPROBE lists. Dimension 8 keeps training fast.
    rng = np.random.default_rng(0)
    count = 264_000
    rows = rng.standard_normal((count, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    index = VectorIndex(8, ivf_min_vectors=count)

    index.add(range(count), rows)
    assert index.wait_for_rebuild(timeout_s=600)

    assert index.kind == "ivf"
    assert index.nprobe == nprobe_for_lists(514)
    assert index.nprobe > MIN_NPROBE
