"""Compare the embedding backends: hit rates on labelled pairs, latency, batching.

``python benchmarks/embedding_backends.py --onnx-dir var/onnx`` prints, for torch,
ONNX fp32 and ONNX int8, the hit and false-hit rates of plain cosine on the pair
sets of ``cache_service.pair_eval``, then the latency of one query and the
throughput of concurrent single-query calls against batched calls. A measurement
script, not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from cache_service.embedding import Embedder, load_embedder
from cache_service.pair_eval import DEFAULT_DATA_DIR, LOADERS, measure, sample

BACKENDS = ("torch", "onnx", "onnx-int8")
LATENCY_QUERY = "How do I reverse a list in Python?"


def print_pair_rates(
    embedders: dict[str, Embedder], data_dir: Path, pairs: int, threshold: float
) -> None:
    """Print one row per backend and dataset: hit rate and false-hit rate."""
    print(f"\npair rates at cosine >= {threshold}, up to {pairs} pairs, seed 0")
    print(f"{'backend':<11}{'dataset':<17}{'hit rate':>9}{'false hits':>11}")
    for dataset, load in LOADERS.items():
        selected = sample(load(data_dir), pairs, seed=0)
        for backend, embedder in embedders.items():
            rates = measure(dataset, selected, embedder, threshold)
            print(
                f"{backend:<11}{dataset:<17}{rates.hit_rate:>9.2%}"
                f"{rates.false_hit_rate:>11.2%}"
            )


def latency_ms(embedder: Embedder, texts: Sequence[str], rounds: int) -> list[float]:
    """Time ``rounds`` calls of ``embed(texts)`` after a warm-up, in milliseconds."""
    for _ in range(10):
        embedder.embed(texts)
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        embedder.embed(texts)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def throughput(
    embedder: Embedder, texts: Sequence[str], threads: int, batch: int
) -> float:
    """Embed ``texts`` from ``threads`` threads, ``batch`` texts per call; texts/s."""
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(embedder.embed, batches))
    return len(texts) / (time.perf_counter() - started)


def print_speed(embedders: dict[str, Embedder], data_dir: Path, rounds: int) -> None:
    """Print single-query latency, then single-call against batched throughput."""
    print(f"\none query of {len(LATENCY_QUERY)} characters, {rounds} calls")
    print(f"{'backend':<11}{'p50 ms':>8}{'p99 ms':>8}")
    for backend, embedder in embedders.items():
        timings = sorted(latency_ms(embedder, [LATENCY_QUERY], rounds))
        p99 = timings[min(len(timings) - 1, int(len(timings) * 0.99))]
        print(f"{backend:<11}{statistics.median(timings):>8.2f}{p99:>8.2f}")

    questions = [pair.first for pair in sample(LOADERS["quora_qqp"](data_dir), 512, 1)]
    print(f"\nthroughput on {len(questions)} Quora questions, texts per second")
    print(f"{'backend':<11}{'threads':>8}{'batch':>6}{'texts/s':>9}")
    for backend, embedder in embedders.items():
        for threads, batch in ((1, 1), (2, 1), (4, 1), (2, 4), (2, 8)):
            rate = throughput(embedder, questions, threads, batch)
            print(f"{backend:<11}{threads:>8}{batch:>6}{rate:>9.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--onnx-dir", type=Path, default=Path("var/onnx"))
    parser.add_argument("--pairs", type=int, default=2000, help="pairs per dataset")
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument("--rounds", type=int, default=300, help="latency calls")
    parser.add_argument("--skip-pairs", action="store_true")
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS)
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    embedders = {
        backend: load_embedder(backend, onnx_dir=args.onnx_dir)
        for backend in args.backends
    }
    if not args.skip_pairs:
        print_pair_rates(embedders, args.data_dir, args.pairs, args.threshold)
    print_speed(embedders, args.data_dir, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
