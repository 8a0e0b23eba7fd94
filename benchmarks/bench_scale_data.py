"""Vectors and probes for the scale benchmark, and the measurements of one index.

The stored vectors are synthetic. With ``clustered`` (the default) each one is a
real Quora question embedding plus Gaussian noise, renormalized, so the index
contains clusters of near paraphrases. With ``uniform`` they are random unit
vectors, which have no structure and are the hardest case for IVF. ``planted``
is uniform plus one noisy copy of each real embedding.
The probes are real embeddings of other questions: the duplicates of cluster
centres, so many have a close neighbour.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cache_service.embedding import Embedder
from cache_service.pair_eval import load_quora

Matrix = npt.NDArray[np.float32]
# Per-dimension noise around a centre. For 384 dimensions it puts a stored vector
# at a cosine of about 0.93 to its centre (1 / sqrt(1 + 384 * 0.02**2)): a close
# paraphrase, not a copy.
CLUSTER_NOISE = 0.02
_CHUNK_ROWS = 65_536


def normalized(matrix: npt.NDArray[np.floating[Any]]) -> Matrix:
    """Return ``matrix`` with every row scaled to unit length, as float32."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


def embed_questions(
    embedder: Embedder, data_dir: Path, centres: int, probes: int, seed: int
) -> tuple[Matrix, Matrix]:
    """Embed ``centres`` Quora questions and the duplicates of ``probes`` of them.

    Returns (centre vectors, probe vectors). Probe i is the duplicate of centre i.

    Raises:
        ValueError: the data has fewer duplicate pairs than ``centres``.
    """
    duplicates = [pair for pair in load_quora(data_dir) if pair.same_meaning]
    if len(duplicates) < centres or probes > centres:
        raise ValueError(
            f"need {centres} duplicate pairs and at most as many probes; "
            f"the data has {len(duplicates)} and {probes} probes were requested"
        )
    chosen = random.Random(seed).sample(duplicates, centres)
    centre_vectors = embedder.embed([pair.first for pair in chosen])
    probe_vectors = embedder.embed([pair.second for pair in chosen[:probes]])
    return normalized(centre_vectors), normalized(probe_vectors)


def stored_vectors(
    size: int, dimension: int, centres: Matrix | None, seed: int
) -> Matrix:
    """Return ``size`` unit vectors: noisy copies of ``centres``, or uniform.

    Built in chunks, so the peak memory is the result plus one chunk.
    """
    rng = np.random.default_rng(seed)
    result = np.empty((size, dimension), dtype=np.float32)
    for start in range(0, size, _CHUNK_ROWS):
        rows = min(_CHUNK_ROWS, size - start)
        noise = rng.standard_normal((rows, dimension)).astype(np.float32)
        if centres is None:
            result[start : start + rows] = normalized(noise)
            continue
        picks = rng.integers(0, len(centres), rows)
        result[start : start + rows] = normalized(
            centres[picks] + CLUSTER_NOISE * noise
        )
    return result


def planted_vectors(size: int, dimension: int, centres: Matrix, seed: int) -> Matrix:
    """Return ``size`` uniform unit vectors with one noisy copy of each centre.

    The copies sit at random rows. Each probe then has one close neighbour among
    unrelated vectors, as a paraphrase has one stored question in a busy cache.

    Raises:
        ValueError: ``size`` is smaller than the number of centres.
    """
    if size < len(centres):
        raise ValueError(f"size {size} is smaller than {len(centres)} centres")
    result = stored_vectors(size, dimension, None, seed)
    rng = np.random.default_rng(seed + 1)
    rows = rng.choice(size, len(centres), replace=False)
    noise = rng.standard_normal(centres.shape).astype(np.float32)
    result[rows] = normalized(centres + CLUSTER_NOISE * noise)
    return result


def resident_bytes() -> int:
    """Return this process's resident set size (VmRSS) in bytes."""
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


@dataclass(frozen=True)
class SearchTimes:
    """Per-probe search latency in ms and the (id, cosine) results, best first."""

    latencies_ms: list[float]
    results: list[list[tuple[int, float]]]

    @property
    def top_ids(self) -> list[list[int]]:
        """The result ids of each probe, best first."""
        return [[entry_id for entry_id, _ in found] for found in self.results]

    def hits_kept(self, threshold: float, mask: npt.NDArray[np.bool_]) -> float | None:
        """Return the share of masked probes whose best result reaches threshold.

        With ``mask`` selecting the probes whose exact best match reaches the
        threshold, this is the share of cache hits that the index still finds,
        with the same or another vector above the threshold.
        """
        chosen = [found for found, keep in zip(self.results, mask, strict=True) if keep]
        if not chosen:
            return None
        kept = sum(1 for found in chosen if found and found[0][1] >= threshold)
        return kept / len(chosen)


def time_searches(
    search: Callable[[Matrix], list[tuple[int, float]]],
    probes: Matrix,
    warmup: int = 5,
) -> SearchTimes:
    """Search each probe alone and time it; ``search`` returns (id, cosine) pairs."""
    for probe in probes[:warmup]:
        search(probe.reshape(1, -1))
    latencies: list[float] = []
    results: list[list[tuple[int, float]]] = []
    for probe in probes:
        started = time.perf_counter()
        found = search(probe.reshape(1, -1))
        latencies.append((time.perf_counter() - started) * 1000)
        results.append(found)
    return SearchTimes(latencies, results)


def recall_at_1(found: list[list[int]], exact_ids: npt.NDArray[np.int64]) -> float:
    """Return the share of probes whose first result is the exact nearest vector."""
    if not found:
        return 0.0
    same = sum(
        1
        for ids, truth in zip(found, exact_ids[:, 0], strict=True)
        if ids and ids[0] == int(truth)
    )
    return same / len(found)


def recall_at_1_where(
    found: list[list[int]],
    exact_ids: npt.NDArray[np.int64],
    mask: npt.NDArray[np.bool_],
) -> float | None:
    """Return recall at 1 over the probes selected by ``mask``; None if none are."""
    chosen = [ids for ids, keep in zip(found, mask, strict=True) if keep]
    if not chosen:
        return None
    return recall_at_1(chosen, exact_ids[mask])
