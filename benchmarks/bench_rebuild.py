"""Measure what a background IVF rebuild costs the callers of the cache's index.

``python -m benchmarks.bench_rebuild --size 1000000`` fills a ``VectorIndex`` with
half the vectors and builds its IVF index, adds the other half without resizing,
then adds one more vector, which starts a background build. Until the new index
is swapped in, one thread alternates a search and an add, as lookups and stores
would. It prints how long the starting ``add`` held its caller, how long the build
ran, the search latencies meanwhile (the slowest one includes the swap) and the
number of adds replayed.

Random unit vectors stand in for embeddings: timing does not depend on where the
vectors lie, only on their number and dimension. The vectors take 1.5 GB per
million at dimension 384, and the run keeps about four copies at the peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from cache_service.vector_index import VectorIndex


@dataclass(frozen=True)
class RebuildTimes:
    """Costs of one background rebuild, in milliseconds unless named otherwise."""

    vectors_before: int
    vectors_after: int
    start_held_ms: float
    build_s: float
    searches: int
    search_p50_ms: float
    search_p99_ms: float
    search_max_ms: float
    replayed_adds: int
    kind_after: str


def unit_vectors(count: int, dimension: int, seed: int) -> np.ndarray:
    """Return ``count`` random float32 rows of length 1."""
    rows = np.random.default_rng(seed).standard_normal((count, dimension))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32)


def measure(size: int, dimension: int = 384, seed: int = 0) -> RebuildTimes:
    """Time one background rebuild from ``size // 2`` to ``size`` vectors."""
    faiss.omp_set_num_threads(1)
    vectors = unit_vectors(size, dimension, seed)
    half = size // 2
    index = VectorIndex(dimension, ivf_min_vectors=min(20_000, half))
    index.add(range(half), vectors[:half], resize=False)
    index.resize_now()
    index.add(range(half, size - 1), vectors[half : size - 1], resize=False)

    started = time.perf_counter()
    index.add([size - 1], vectors[size - 1 :])
    start_held_ms = (time.perf_counter() - started) * 1000
    if not index.rebuilding:
        raise RuntimeError(
            f"adding vector {size} did not start a background build; pass a size "
            "of at least 40,000 so that the index doubles past 20,000 vectors"
        )

    rng = np.random.default_rng(seed + 1)
    latencies = []
    added = 0
    build_started = time.perf_counter()
    while index.rebuilding:
        query = vectors[rng.integers(size)]
        search_started = time.perf_counter()
        index.search(query, 8)
        latencies.append((time.perf_counter() - search_started) * 1000)
        if index.rebuilding:
            index.add([size + added], vectors[added : added + 1], resize=False)
            added += 1
    return RebuildTimes(
        vectors_before=half,
        vectors_after=len(index),
        start_held_ms=round(start_held_ms, 1),
        build_s=round(time.perf_counter() - build_started, 1),
        searches=len(latencies),
        search_p50_ms=round(statistics.median(latencies), 2),
        search_p99_ms=round(float(np.percentile(latencies, 99)), 2),
        search_max_ms=round(max(latencies), 1),
        replayed_adds=added,
        kind_after=index.kind,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_rebuild",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--size", type=int, default=1_000_000, help="vectors after the rebuild"
    )
    parser.add_argument("--dimension", type=int, default=384)
    args = parser.parse_args(argv)
    if args.size < 40_000:
        parser.error(f"--size must be at least 40000; got {args.size}")
    print(json.dumps(asdict(measure(args.size, args.dimension)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
