"""FAISS inner-product indexes over normalized vectors, addressed by entry id.

A partition is searched exactly (flat) while it is small, and by an inverted-file
index (IVF) once it reaches ``ivf_min_vectors``. Not thread-safe: the cache
serializes every call under its own lock. Large IVF indexes are trained in a
background thread, so the caller holds that lock only while the vectors are copied
out and while the finished index is swapped in.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import faiss
import numpy as np

from cache_service.embedding import Vectors

logger = logging.getLogger(__name__)

# Flat search time grows linearly with the partition. One search of 20,000 vectors
# took 1.7 to 4.5 ms on one core of a loaded 2-core machine, a large share of a
# lookup, so bigger partitions switch to an approximate index.
DEFAULT_IVF_MIN_VECTORS = 20_000
# Inverted lists probed per search: at least MIN_NPROBE, and one list in
# LISTS_PER_PROBE (about 3 %) of a large index. On 1M vectors with 1,000 lists and
# one close neighbour per probe, nprobe 16 kept 95.6 % of exact search's hits and
# nprobe 32 kept 98.9 % (benchmarks/bench_scale.py, docs/benchmarks.md "Scale").
MIN_NPROBE = 16
LISTS_PER_PROBE = 32
# FAISS warns when k-means has fewer than 39 training points per centroid.
_MIN_POINTS_PER_LIST = 39
# IVF rebuilds of at least this many vectors train in a background thread. At
# 1,000,000 vectors a rebuild took 80 to 180 s, and every lookup of the cache
# waited for it while it ran inside ``add``.
DEFAULT_BACKGROUND_MIN_VECTORS = 20_000
# After a background build fails, the old index keeps serving, and the next build
# starts no sooner than this many seconds later.
_RETRY_AFTER_S = 60.0


@dataclass
class _Build:
    """A background IVF build, and the changes made to the index since it began."""

    size: int
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    # ("add", ids, vectors) or ("remove", ids, None), in call order.
    changes: list[tuple[str, np.ndarray, np.ndarray | None]] = field(
        default_factory=list
    )
    result: faiss.Index | None = None
    error: BaseException | None = None


class VectorIndex:
    """Nearest-neighbour search by cosine similarity for one partition.

    Small partitions use ``IndexIDMap2`` over ``IndexFlatIP``, which is exact.
    From ``ivf_min_vectors`` on, the vectors move to an ``IndexIVFFlat`` trained on
    them, which probes ``nprobe`` of about sqrt(n) lists and so can miss a true
    neighbour. By default ``nprobe`` follows ``nprobe_for_lists``, and an explicit
    ``nprobe`` fixes it (capped at the list count). IVF keeps removal exact (a
    hash-table direct map removes by id), which HNSW in FAISS cannot do. The index
    is retrained when it has doubled since its last training, and goes back to flat
    below half of ``ivf_min_vectors``. The vectors must be L2-normalized, which
    makes the inner product the cosine.

    An IVF rebuild of at least ``background_min_vectors`` vectors copies the
    vectors out and trains on them in a background thread. Until it finishes, the
    old index serves every search and takes every add and remove, and each change
    is also recorded. The first call after the build ends replays the recorded
    changes on the new index and swaps it in. Smaller rebuilds, and every move back
    to flat, run inside the ``add`` or ``remove`` that crosses the size boundary
    (about a second per 20,000 vectors of dimension 384 on one core).
    """

    def __init__(
        self,
        dimension: int,
        ivf_min_vectors: int = DEFAULT_IVF_MIN_VECTORS,
        nprobe: int | None = None,
        background_min_vectors: int = DEFAULT_BACKGROUND_MIN_VECTORS,
    ) -> None:
        if ivf_min_vectors < 2 * _MIN_POINTS_PER_LIST:
            raise ValueError(
                f"ivf_min_vectors must be at least {2 * _MIN_POINTS_PER_LIST}; "
                f"got {ivf_min_vectors}"
            )
        if nprobe is not None and nprobe < 1:
            raise ValueError(
                f"nprobe must be at least 1; got {nprobe}. Leave it None to probe "
                "a share of the lists that grows with their number."
            )
        self._dimension = dimension
        self._ivf_min_vectors = ivf_min_vectors
        self._nprobe = nprobe
        self._ids: set[int] = set()
        self._background_min_vectors = background_min_vectors
        self._index: faiss.Index = _flat_index(dimension)
        self._trained_size = 0
        self._build: _Build | None = None
        self._retry_at = 0.0

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def kind(self) -> str:
        """ "flat" or "ivf": the FAISS index type currently in use."""
        return "ivf" if self._trained_size else "flat"

    @property
    def rebuilding(self) -> bool:
        """Whether a background IVF build is running or waiting to be swapped in."""
        return self._build is not None

    @property
    def nprobe(self) -> int | None:
        """Lists that each search probes, or None while the index is flat."""
        if not self._trained_size:
            return None
        return int(faiss.extract_index_ivf(self._index).nprobe)

    def add(self, ids: Iterable[int], vectors: Vectors, *, resize: bool = True) -> None:
        """Add ``vectors`` (one row per id) under ``ids``.

        With ``resize`` False the index keeps its type until ``resize_now``, which
        suits loading many vectors at once.

        Raises:
            ValueError: the shapes do not match, or an id is already present.
        """
        id_array = np.fromiter(ids, dtype=np.int64)
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape != (len(id_array), self._dimension):
            raise ValueError(
                f"expected vectors of shape ({len(id_array)}, {self._dimension}); "
                f"got {matrix.shape}"
            )
        # FAISS would accept a duplicate id and keep both rows, so removal and
        # reconstruction by id would become ambiguous.
        new_ids = {int(entry_id) for entry_id in id_array}
        duplicates = sorted(new_ids & self._ids)
        if duplicates or len(new_ids) != len(id_array):
            first_duplicate = duplicates[0] if duplicates else int(id_array[0])
            raise ValueError(f"id {first_duplicate} is already in the index")
        self._index.add_with_ids(matrix, id_array)
        self._ids |= new_ids
        if self._build is not None:
            self._build.changes.append(("add", id_array, matrix.copy()))
        if resize:
            self._resize_if_needed()

    def contains(self, entry_id: int) -> bool:
        """Return whether a vector is stored under ``entry_id``."""
        return entry_id in self._ids

    def ids(self) -> set[int]:
        """Return the ids of every stored vector."""
        return set(self._ids)

    def remove(self, ids: Iterable[int]) -> int:
        """Remove the vectors stored under ``ids`` and return how many were found."""
        present = sorted({int(entry_id) for entry_id in ids} & self._ids)
        if not present:
            return 0
        # The hash-table direct map of an IVF index accepts only an id array.
        selector = faiss.IDSelectorArray(np.array(present, dtype=np.int64))
        removed = int(self._index.remove_ids(selector))
        self._ids.difference_update(present)
        if self._build is not None:
            self._build.changes.append(("remove", np.array(present, np.int64), None))
        self._resize_if_needed()
        return removed

    def search(self, vector: Vectors, k: int) -> list[tuple[int, float]]:
        """Return up to ``k`` (id, cosine) pairs, best first."""
        self._adopt_finished_build()
        if not self._ids or k <= 0:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        scores, ids = self._index.search(query, min(k, len(self)))
        # FAISS pads missing results with id -1.
        return [
            (int(entry_id), float(score))
            for entry_id, score in zip(ids[0], scores[0], strict=True)
            if entry_id != -1
        ]

    def resize_now(self) -> None:
        """Move to the index type that the current size calls for, in this thread.

        A background build that is still running is waited for first.
        """
        self.wait_for_rebuild()
        self._resize_if_needed(background=False)

    def wait_for_rebuild(self, timeout_s: float | None = None) -> bool:
        """Wait for a background build and swap it in. Return False on a timeout."""
        if self._build is not None and not self._build.done.wait(timeout_s):
            return False
        self._adopt_finished_build()
        return True

    def _resize_if_needed(self, *, background: bool = True) -> None:
        self._adopt_finished_build()
        if self._build is not None:
            return
        size = len(self._ids)
        if self._trained_size == 0:
            if size >= self._ivf_min_vectors:
                self._rebuild_ivf(background)
        elif size < self._ivf_min_vectors // 2:
            self._rebuild(use_ivf=False)
        elif size >= 2 * self._trained_size:
            # About sqrt(n) lists suit n vectors, and the data may have drifted.
            self._rebuild_ivf(background)

    def _rebuild_ivf(self, background: bool) -> None:
        if not background or len(self._ids) < self._background_min_vectors:
            self._rebuild(use_ivf=True)
        elif time.monotonic() >= self._retry_at:
            self._start_build()

    def _start_build(self) -> None:
        """Copy the vectors out and train a new IVF index on them in a thread."""
        ids, vectors = self._copy_vectors()
        build = _Build(size=len(ids), started=time.perf_counter())
        self._build = build
        thread = threading.Thread(
            target=_train_in_background,
            args=(build, self._dimension, ids, vectors, self._nprobe),
            name="vector-index-build",
            daemon=True,
        )
        thread.start()
        logger.info("vector_index_rebuild_started", extra={"vectors": len(ids)})

    def _copy_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Return every stored id, sorted, and a copy of its vector row by row."""
        ids = np.array(sorted(self._ids), dtype=np.int64)
        return ids, self._index.reconstruct_batch(ids)

    def _adopt_finished_build(self) -> None:
        """Swap in a finished background build, after replaying the later changes."""
        build = self._build
        if build is None or not build.done.is_set():
            return
        self._build = None
        index = build.result
        if index is None:
            self._retry_at = time.monotonic() + _RETRY_AFTER_S
            logger.error(
                "vector_index_rebuild_failed",
                extra={"vectors": build.size, "error": repr(build.error)},
            )
            return
        for action, ids, vectors in build.changes:
            if action == "add" and vectors is not None:
                index.add_with_ids(vectors, ids)
            elif action == "remove":
                index.remove_ids(faiss.IDSelectorArray(ids))
        if index.ntotal != len(self._ids):
            # Never expected. The old index still contains every vector, so keep it.
            self._retry_at = time.monotonic() + _RETRY_AFTER_S
            logger.error(
                "vector_index_rebuild_failed",
                extra={"vectors": len(self._ids), "built": int(index.ntotal)},
            )
            return
        self._index = index
        self._trained_size = build.size
        logger.info(
            "vector_index_rebuilt",
            extra={
                "kind": self.kind,
                "vectors": len(self._ids),
                "replayed_changes": len(build.changes),
                "nprobe": self.nprobe,
                "duration_ms": round((time.perf_counter() - build.started) * 1000, 1),
            },
        )

    def _rebuild(self, *, use_ivf: bool) -> None:
        """Move every vector to a new flat index or a new IVF index trained on them."""
        started = time.perf_counter()
        ids, vectors = self._copy_vectors()
        if use_ivf:
            index = _ivf_index(self._dimension, vectors, self._nprobe)
            self._trained_size = len(ids)
        else:
            index = _flat_index(self._dimension)
            self._trained_size = 0
        index.add_with_ids(vectors, ids)
        self._index = index
        logger.info(
            "vector_index_rebuilt",
            extra={
                "kind": self.kind,
                "vectors": len(ids),
                "nprobe": self.nprobe,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )


def _train_in_background(
    build: _Build,
    dimension: int,
    ids: np.ndarray,
    vectors: np.ndarray,
    nprobe: int | None,
) -> None:
    """Build an IVF index of ``vectors`` into ``build``, then mark it done."""
    try:
        index = _ivf_index(dimension, vectors, nprobe)
        index.add_with_ids(vectors, ids)
        build.result = index
    except Exception as error:  # The adopting caller logs it.
        build.error = error
    finally:
        build.done.set()


def _flat_index(dimension: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))


def nprobe_for_lists(lists: int) -> int:
    """Return how many of ``lists`` inverted lists a search probes by default.

    MIN_NPROBE up to 512 lists (about 262,000 vectors), then one list in
    LISTS_PER_PROBE, so 32 at 1,000 lists. Never more than ``lists``.
    """
    return min(lists, max(MIN_NPROBE, math.ceil(lists / LISTS_PER_PROBE)))


def _ivf_index(dimension: int, training: Vectors, nprobe: int | None) -> faiss.Index:
    """Return an empty IVF index whose centroids are trained on ``training``."""
    lists = max(
        1, min(round(math.sqrt(len(training))), len(training) // _MIN_POINTS_PER_LIST)
    )
    index = faiss.IndexIVFFlat(
        faiss.IndexFlatIP(dimension), dimension, lists, faiss.METRIC_INNER_PRODUCT
    )
    index.train(training)
    index.nprobe = nprobe_for_lists(lists) if nprobe is None else min(nprobe, lists)
    # A hash-table direct map lets reconstruct() and remove_ids() work by entry id.
    index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
    return index


class PartitionedIndex:
    """One VectorIndex per partition key, so a search only sees its own partition.

    A partition is created by its first vector and dropped with its last one.
    """

    def __init__(
        self,
        dimension: int,
        ivf_min_vectors: int = DEFAULT_IVF_MIN_VECTORS,
        background_min_vectors: int = DEFAULT_BACKGROUND_MIN_VECTORS,
    ) -> None:
        self._dimension = dimension
        self._ivf_min_vectors = ivf_min_vectors
        self._background_min_vectors = background_min_vectors
        self._partitions: dict[str, VectorIndex] = {}

    def __len__(self) -> int:
        return sum(len(index) for index in self._partitions.values())

    @property
    def rebuilding(self) -> int:
        """Count the partitions whose IVF index is being built in the background."""
        return sum(index.rebuilding for index in self._partitions.values())

    def add(
        self, partition: str, entry_id: int, vector: Vectors, *, resize: bool = True
    ) -> None:
        """Add one vector under ``entry_id`` to ``partition``.

        With ``resize`` False the partition keeps its index type until
        ``resize_now``.
        """
        index = self._partitions.get(partition)
        if index is None:
            index = VectorIndex(
                self._dimension,
                self._ivf_min_vectors,
                background_min_vectors=self._background_min_vectors,
            )
            self._partitions[partition] = index
        index.add([entry_id], vector.reshape(1, -1), resize=resize)

    def resize_now(self) -> None:
        """Give every partition the index type its size calls for, in this thread."""
        for index in self._partitions.values():
            index.resize_now()

    def remove(self, partition: str, entry_id: int) -> None:
        """Remove the vector of ``entry_id`` from ``partition``, if present."""
        index = self._partitions.get(partition)
        if index is None:
            return
        index.remove([entry_id])
        if len(index) == 0:
            del self._partitions[partition]

    def search(
        self, partition: str, vector: Vectors, k: int
    ) -> list[tuple[int, float]]:
        """Return up to ``k`` (id, cosine) pairs of ``partition``, best first."""
        index = self._partitions.get(partition)
        return [] if index is None else index.search(vector, k)

    def ids_by_partition(self) -> dict[str, set[int]]:
        """Return the stored ids of every partition."""
        return {key: index.ids() for key, index in self._partitions.items()}
