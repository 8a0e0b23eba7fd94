"""Tests of VectorIndex against a brute-force NumPy oracle."""

from __future__ import annotations

import numpy as np
import pytest

from cache_service.vector_index import PartitionedIndex, VectorIndex

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
