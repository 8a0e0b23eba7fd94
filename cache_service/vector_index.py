"""A FAISS inner-product index over normalized vectors, addressed by entry id.

Not thread-safe: the cache serializes every call under its own lock.
"""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np

from cache_service.embedding import Vectors


class VectorIndex:
    """Exact nearest-neighbour search by cosine similarity for one partition.

    ``IndexIDMap2`` over ``IndexFlatIP`` stores each vector under the caller's int64
    id, so a search returns entry ids directly and removal by id is exact. The
    vectors must be L2-normalized, which makes the inner product the cosine.
    """

    def __init__(self, dimension: int) -> None:
        self._dimension = dimension
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: Iterable[int], vectors: Vectors) -> None:
        """Add ``vectors`` (one row per id) under ``ids``.

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
        # IndexIDMap2 would accept a duplicate id and keep both rows, so removal
        # and reconstruction by id would become ambiguous.
        for entry_id in id_array:
            if self.contains(int(entry_id)):
                raise ValueError(f"id {entry_id} is already in the index")
        self._index.add_with_ids(matrix, id_array)

    def contains(self, entry_id: int) -> bool:
        """Return whether a vector is stored under ``entry_id``."""
        try:
            self._index.reconstruct(entry_id)
        except RuntimeError:
            return False
        return True

    def ids(self) -> set[int]:
        """Return the ids of every stored vector."""
        return {int(entry_id) for entry_id in faiss.vector_to_array(self._index.id_map)}

    def remove(self, ids: Iterable[int]) -> int:
        """Remove the vectors stored under ``ids`` and return how many were found."""
        id_array = np.fromiter(ids, dtype=np.int64)
        if len(id_array) == 0:
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(id_array)))

    def search(self, vector: Vectors, k: int) -> list[tuple[int, float]]:
        """Return up to ``k`` (id, cosine) pairs, best first."""
        if len(self) == 0 or k <= 0:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        scores, ids = self._index.search(query, min(k, len(self)))
        # FAISS pads missing results with id -1.
        return [
            (int(entry_id), float(score))
            for entry_id, score in zip(ids[0], scores[0], strict=True)
            if entry_id != -1
        ]


class PartitionedIndex:
    """One VectorIndex per partition key, so a search only sees its own partition.

    A partition is created by its first vector and dropped with its last one.
    """

    def __init__(self, dimension: int) -> None:
        self._dimension = dimension
        self._partitions: dict[str, VectorIndex] = {}

    def __len__(self) -> int:
        return sum(len(index) for index in self._partitions.values())

    def add(self, partition: str, entry_id: int, vector: Vectors) -> None:
        """Add one vector under ``entry_id`` to ``partition``."""
        index = self._partitions.get(partition)
        if index is None:
            index = VectorIndex(self._dimension)
            self._partitions[partition] = index
        index.add([entry_id], vector.reshape(1, -1))

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
