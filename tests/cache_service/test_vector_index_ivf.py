"""Tests of the IVF mode of VectorIndex on real embeddings, against exact search."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cache_service.embedding import SentenceTransformerEmbedder, Vectors
from cache_service.pair_eval import DEFAULT_DATA_DIR, load_quora
from cache_service.vector_index import MIN_NPROBE, VectorIndex

IVF_MIN_VECTORS = 1_000
STORED = 1_500
QUERIES = 200
K = 8


@pytest.fixture(scope="module")
def quora_vectors(
    real_embedder: SentenceTransformerEmbedder,
) -> tuple[Vectors, Vectors]:
    """Embeddings of stored Quora questions and of other questions used as queries.

    Half of the queries are paraphrases of a stored question, so many searches
    have a neighbour above the cache threshold, as in real traffic.
    """
    pairs = load_quora(DEFAULT_DATA_DIR)
    random.Random(0).shuffle(pairs)
    stored: list[str] = []
    queries: list[str] = []
    seen: set[str] = set()
    for pair in pairs:
        if pair.first in seen or pair.second in seen:
            continue
        seen.update((pair.first, pair.second))
        if len(stored) < STORED:
            stored.append(pair.first)
            if pair.same_meaning and len(queries) < QUERIES // 2:
                queries.append(pair.second)
        elif len(queries) < QUERIES:
            queries.append(pair.first)
        else:
            break
    return real_embedder.embed(stored), real_embedder.embed(queries)


def _oracle(ids: np.ndarray, vectors: Vectors, query: Vectors) -> list[int]:
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:K]
    return [int(ids[i]) for i in order]


def _recall(
    index: VectorIndex, ids: np.ndarray, vectors: Vectors, queries: Vectors
) -> tuple[float, float]:
    """Return (mean recall at K, share of queries whose best match agrees)."""
    recalls = []
    top_agrees = []
    for query in queries:
        found = [entry_id for entry_id, _ in index.search(query, K)]
        expected = _oracle(ids, vectors, query)
        recalls.append(len(set(found) & set(expected)) / K)
        top_agrees.append(bool(found) and found[0] == expected[0])
    return float(np.mean(recalls)), float(np.mean(top_agrees))


def test_ivf_recall_matches_exact_search(
    quora_vectors: tuple[Vectors, Vectors],
) -> None:
    stored, queries = quora_vectors
    ids = np.arange(1, STORED + 1, dtype=np.int64) * 7
    index = VectorIndex(384, ivf_min_vectors=IVF_MIN_VECTORS)
    for start in range(0, STORED, 100):
        index.add(ids[start : start + 100].tolist(), stored[start : start + 100])

    assert index.kind == "ivf"
    assert len(index) == STORED
    # 1,500 vectors get 38 lists, below the size at which nprobe grows.
    assert index.nprobe == MIN_NPROBE
    recall, top_agrees = _recall(index, ids, stored, queries)
    assert recall >= 0.95
    assert top_agrees >= 0.98


def test_ivf_probing_every_list_is_exact(
    quora_vectors: tuple[Vectors, Vectors],
) -> None:
    stored, queries = quora_vectors
    ids = np.arange(STORED, dtype=np.int64)
    # An explicit nprobe above the list count is capped at the list count.
    index = VectorIndex(384, ivf_min_vectors=IVF_MIN_VECTORS, nprobe=10_000)
    index.add(ids.tolist(), stored)

    assert index.kind == "ivf"
    assert index.nprobe == 38
    for query in queries:
        found = {entry_id for entry_id, _ in index.search(query, K)}
        assert found == set(_oracle(ids, stored, query))


def test_ivf_explicit_nprobe_overrides_rule(
    quora_vectors: tuple[Vectors, Vectors],
) -> None:
    stored, queries = quora_vectors
    ids = np.arange(STORED, dtype=np.int64)
    by_rule = VectorIndex(384, ivf_min_vectors=IVF_MIN_VECTORS)
    one_list = VectorIndex(384, ivf_min_vectors=IVF_MIN_VECTORS, nprobe=1)
    by_rule.add(ids.tolist(), stored)
    one_list.add(ids.tolist(), stored)

    rule_recall, _ = _recall(by_rule, ids, stored, queries)
    one_list_recall, _ = _recall(one_list, ids, stored, queries)

    assert one_list.nprobe == 1
    assert one_list_recall < rule_recall


def test_ivf_scores_are_exact_cosines(
    quora_vectors: tuple[Vectors, Vectors],
) -> None:
    stored, queries = quora_vectors
    ids = np.arange(STORED, dtype=np.int64)
    index = VectorIndex(384, ivf_min_vectors=IVF_MIN_VECTORS)
    index.add(ids.tolist(), stored)

    for query in queries[:50]:
        for entry_id, score in index.search(query, K):
            assert score == pytest.approx(float(stored[entry_id] @ query), abs=1e-5)


def test_ivf_never_returns_removed_ids(
    quora_vectors: tuple[Vectors, Vectors],
) -> None:
    stored, queries = quora_vectors
    ids = np.arange(STORED, dtype=np.int64)
    index = VectorIndex(384, ivf_min_vectors=IVF_MIN_VECTORS)
    index.add(ids.tolist(), stored)
    removed = set(range(0, STORED, 3))

    assert index.remove(sorted(removed)) == len(removed)

    keep = np.array([int(i) not in removed for i in ids])
    assert index.kind == "ivf"
    assert index.ids() == set(ids[keep].tolist())
    for query in queries:
        found = {entry_id for entry_id, _ in index.search(query, K)}
        assert not found & removed
    recall, _ = _recall(index, ids[keep], stored[keep], queries)
    assert recall >= 0.95


def test_shrunk_index_returns_to_exact_flat_search(
    quora_vectors: tuple[Vectors, Vectors],
) -> None:
    stored, queries = quora_vectors
    ids = np.arange(STORED, dtype=np.int64)
    index = VectorIndex(384, ivf_min_vectors=IVF_MIN_VECTORS)
    index.add(ids.tolist(), stored)
    remaining = IVF_MIN_VECTORS // 2 - 1

    index.remove(range(remaining, STORED))

    assert index.kind == "flat"
    assert len(index) == remaining
    for query in queries[:50]:
        found = [entry_id for entry_id, _ in index.search(query, K)]
        assert found == _oracle(ids[:remaining], stored[:remaining], query)


def test_ivf_rejects_duplicate_id(quora_vectors: tuple[Vectors, Vectors]) -> None:
    stored, _ = quora_vectors
    index = VectorIndex(384, ivf_min_vectors=IVF_MIN_VECTORS)
    index.add(range(IVF_MIN_VECTORS), stored[:IVF_MIN_VECTORS])

    assert index.kind == "ivf"
    with pytest.raises(ValueError, match="id 5 is already in the index"):
        index.add([5], stored[IVF_MIN_VECTORS : IVF_MIN_VECTORS + 1])
    assert len(index) == IVF_MIN_VECTORS


def test_duplicate_ids_within_one_add_are_rejected() -> None:
    index = VectorIndex(4)
    with pytest.raises(ValueError, match="id 3 is already in the index"):
        index.add([3, 3], np.eye(4, dtype=np.float32)[:2])
    assert len(index) == 0


def test_too_small_ivf_threshold_is_rejected() -> None:
    with pytest.raises(ValueError, match="ivf_min_vectors must be at least 78"):
        VectorIndex(4, ivf_min_vectors=10)
