"""Tests of IVF builds that run in a background thread while the index serves."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import faiss
import numpy as np
import pytest

from cache_service import vector_index
from cache_service.vector_index import PartitionedIndex, VectorIndex

DIMENSION = 16
SIZE = 400


def unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, DIMENSION))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32)


class HeldTraining:
    """Makes IVF training wait until the test releases it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.trainer_threads: list[str] = []
        self._train = vector_index._ivf_index

    def __call__(
        self, dimension: int, training: np.ndarray, nprobe: int | None
    ) -> faiss.Index:
        self.trainer_threads.append(threading.current_thread().name)
        self.started.set()
        assert self.release.wait(timeout=60)
        return self._train(dimension, training, nprobe)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldTraining]:
    holder = HeldTraining()
    monkeypatch.setattr(vector_index, "_ivf_index", holder)
    yield holder
    holder.release.set()


def test_build_runs_while_index_serves(held: HeldTraining) -> None:
    rows = unit_rows(SIZE + 60, seed=1)
    index = VectorIndex(DIMENSION, ivf_min_vectors=SIZE, background_min_vectors=SIZE)

    index.add(range(SIZE), rows[:SIZE])
    assert held.started.wait(timeout=30)
    # The add returned while training is held, and the flat index still answers.
    assert index.rebuilding
    assert index.kind == "flat"
    added_ids = range(SIZE, SIZE + 60)
    index.add(added_ids, rows[SIZE:])
    removed = [0, 1, 2, SIZE, SIZE + 1]
    assert index.remove(removed) == len(removed)
    assert index.search(rows[SIZE + 5], 1)[0][0] == SIZE + 5
    assert index.search(rows[0], 1)[0][0] != 0

    held.release.set()
    assert index.wait_for_rebuild(timeout_s=60)

    assert held.trainer_threads == ["vector-index-build"]
    assert not index.rebuilding
    assert index.kind == "ivf"
    expected = set(range(SIZE + 60)) - set(removed)
    assert index.ids() == expected
    assert len(index) == len(expected)
    # 400 vectors get 10 lists, all probed, so the IVF search is exact.
    for entry_id in sorted(expected):
        assert index.search(rows[entry_id], 1)[0][0] == entry_id
    for entry_id in removed:
        assert entry_id not in {found for found, _ in index.search(rows[entry_id], 5)}


def test_finished_build_is_swapped_in_by_next_search(held: HeldTraining) -> None:
    rows = unit_rows(SIZE, seed=2)
    index = VectorIndex(DIMENSION, ivf_min_vectors=SIZE, background_min_vectors=SIZE)
    index.add(range(SIZE), rows)
    held.release.set()
    # The index is not thread-safe, so it swaps only when called.
    for _ in range(1200):
        index.search(rows[7], 1)
        if index.kind == "ivf":
            break
        time.sleep(0.05)

    assert index.kind == "ivf"
    assert not index.rebuilding


def test_failed_build_keeps_old_index(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(dimension: int, training: np.ndarray, nprobe: int | None) -> None:
        raise RuntimeError("training failed")

    monkeypatch.setattr(vector_index, "_ivf_index", fail)
    rows = unit_rows(SIZE + 1, seed=3)
    index = VectorIndex(DIMENSION, ivf_min_vectors=SIZE, background_min_vectors=SIZE)
    index.add(range(SIZE), rows[:SIZE])

    with caplog.at_level(logging.ERROR, logger="cache_service.vector_index"):
        assert index.wait_for_rebuild(timeout_s=60)

    assert index.kind == "flat"
    assert not index.rebuilding
    assert len(index) == SIZE
    assert index.search(rows[9], 1)[0][0] == 9
    (record,) = [r for r in caplog.records if r.msg == "vector_index_rebuild_failed"]
    assert "training failed" in record.error  # type: ignore[attr-defined]
    # No new build starts at once after a failure.
    index.add([SIZE], rows[SIZE:])
    assert not index.rebuilding


def test_small_rebuild_stays_in_caller() -> None:
    rows = unit_rows(SIZE, seed=4)
    index = VectorIndex(
        DIMENSION, ivf_min_vectors=SIZE, background_min_vectors=SIZE + 1
    )

    index.add(range(SIZE), rows)

    assert not index.rebuilding
    assert index.kind == "ivf"


def test_deferred_resize_builds_once_in_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = unit_rows(3 * SIZE, seed=5)
    partitions = PartitionedIndex(
        DIMENSION, ivf_min_vectors=SIZE, background_min_vectors=SIZE
    )
    with caplog.at_level(logging.INFO, logger="cache_service.vector_index"):
        for entry_id, row in enumerate(rows):
            partitions.add("scope", entry_id, row, resize=False)
        assert not caplog.records

        partitions.resize_now()

    (record,) = caplog.records
    assert record.msg == "vector_index_rebuilt"
    assert record.kind == "ivf"  # type: ignore[attr-defined]
    assert partitions.rebuilding == 0
    assert partitions.search("scope", rows[11], 1)[0][0] == 11
    assert len(partitions) == 3 * SIZE
