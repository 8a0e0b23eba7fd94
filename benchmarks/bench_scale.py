"""Scale benchmark: lookup latency, memory and recall of the vector index by size.

`python -m benchmarks.bench_scale --sizes 10000,100000,1000000` fills, at each
size, the cache's own `VectorIndex` (flat below 20,000 vectors, IVF from there)
and, for comparison, FAISS flat, IVF and HNSW indexes with the same vectors.
Recall at 1 is measured against exact (flat) search. Searches run one query at
a time on one thread, as the cache runs them; builds use two threads. Writes
bench-scale.json and bench-scale.md under --out-dir.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import faiss
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from benchmarks.bench_load_stats import percentile
from benchmarks.bench_scale_data import (
    Matrix,
    embed_questions,
    planted_vectors,
    recall_at_1,
    recall_at_1_where,
    resident_bytes,
    stored_vectors,
    time_searches,
)
from cache_service.embedding import load_embedder
from cache_service.settings import CacheSettings
from cache_service.vector_index import VectorIndex

REPO = Path(__file__).resolve().parent.parent
DIMENSION = 384
IVF_NPROBES = (16, 32, 64)
HNSW_M = 32
HNSW_EF_SEARCH = (16, 64, 128)
BUILD_THREADS = 2
_Index = TypeVar("_Index")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_scale", description=__doc__
    )
    parser.add_argument(
        "--sizes",
        default="10000,100000,1000000",
        help="comma-separated numbers of stored vectors "
        "(default: 10000,100000,1000000)",
    )
    parser.add_argument(
        "--vectors",
        choices=("clustered", "uniform", "planted"),
        default="clustered",
        help="clustered: noisy copies of real question embeddings; uniform: random "
        "unit vectors; planted: uniform plus one noisy copy of each real embedding "
        "(default: clustered)",
    )
    parser.add_argument("--centres", type=int, default=2000, help="cluster centres")
    parser.add_argument("--probes", type=int, default=200, help="query vectors")
    parser.add_argument(
        "--hnsw-max-size",
        type=int,
        default=100_000,
        help="skip HNSW above this size, because its build is slow: 47 to 263 s "
        "for 100,000 vectors on 2 cores (default: 100000)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("QUERYGATE_DATA_DIR", REPO.parent / "shared/data")),
    )
    parser.add_argument("--onnx-dir", type=Path, default=REPO / "var" / "onnx")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out-dir", type=Path, default=REPO / "var" / "bench")
    args = parser.parse_args(argv)
    try:
        args.size_list = [int(part) for part in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be integers separated by commas; got {args.sizes}")
    if any(size < 100 for size in args.size_list):
        parser.error(f"every size must be at least 100; got {args.sizes}")
    if not 1 <= args.probes <= args.centres:
        parser.error("--probes must be between 1 and --centres")
    return args


@dataclass(frozen=True)
class Build:
    """How long an index took to build and the memory it added, in bytes."""

    seconds: float
    rss_growth: int
    serialized: int | None = None


Searcher = Callable[[Matrix], list[tuple[int, float]]]


def _build(make: Callable[[], _Index]) -> tuple[_Index, Build]:
    """Run ``make`` on BUILD_THREADS threads and measure time and RSS growth."""
    gc.collect()
    faiss.omp_set_num_threads(BUILD_THREADS)
    before = resident_bytes()
    started = time.perf_counter()
    built = make()
    seconds = time.perf_counter() - started
    growth = resident_bytes() - before
    faiss.omp_set_num_threads(1)
    return built, Build(seconds, growth)


def _faiss_searcher(index: faiss.Index, k: int) -> Searcher:
    def search(query: Matrix) -> list[tuple[int, float]]:
        scores, ids = index.search(query, k)
        return [
            (int(i), float(score))
            for i, score in zip(ids[0], scores[0], strict=True)
            if i != -1
        ]

    return search


class _SizeMeasurement:
    """The probes, their exact nearest neighbours and the table rows of one size."""

    def __init__(self, size: int, probes: Matrix, exact: faiss.Index) -> None:
        settings = CacheSettings()
        self.size = size
        self.probes = probes
        self.k = settings.search_candidates
        self.threshold = settings.min_cosine_similarity
        faiss.omp_set_num_threads(BUILD_THREADS)
        scores, self.exact_ids = exact.search(probes, self.k)
        faiss.omp_set_num_threads(1)
        self.above = scores[:, 0] >= self.threshold
        self.rows: list[dict[str, Any]] = []

    def add_row(self, index: str, setting: str, search: Searcher, build: Build) -> None:
        """Time ``search`` on every probe and record its row."""
        timed = time_searches(search, self.probes)
        serialized = build.serialized
        self.rows.append(
            {
                "index": index,
                "setting": setting,
                "build_s": build.seconds,
                "rss_bytes_per_vector": build.rss_growth / self.size,
                "serialized_bytes_per_vector": (
                    None if serialized is None else serialized / self.size
                ),
                "search_p50_ms": percentile(timed.latencies_ms, 0.5),
                "search_p99_ms": percentile(timed.latencies_ms, 0.99),
                "recall_at_1": recall_at_1(timed.top_ids, self.exact_ids),
                "recall_at_1_above_threshold": recall_at_1_where(
                    timed.top_ids, self.exact_ids, self.above
                ),
                "hits_kept": timed.hits_kept(self.threshold, self.above),
            }
        )


def _flat(vectors: Matrix) -> faiss.Index:
    index = faiss.IndexFlatIP(DIMENSION)
    index.add(vectors)
    return index


def _ivf(vectors: Matrix, lists: int) -> faiss.IndexIVFFlat:
    index = faiss.IndexIVFFlat(
        faiss.IndexFlatIP(DIMENSION), DIMENSION, lists, faiss.METRIC_INNER_PRODUCT
    )
    index.train(vectors)
    index.add(vectors)
    return index


def _hnsw(vectors: Matrix) -> faiss.IndexHNSWFlat:
    index = faiss.IndexHNSWFlat(DIMENSION, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.add(vectors)
    return index


def _cache_index(vectors: Matrix) -> VectorIndex:
    index = VectorIndex(DIMENSION)
    index.add(range(len(vectors)), vectors)
    return index


def measure_size(
    size: int, vectors: Matrix, probes: Matrix, hnsw: bool, progress: Progress
) -> dict[str, Any]:
    """Build every index over ``vectors`` and measure it with ``probes``."""
    task = progress.add_task(f"{size:,} vectors: flat", total=None)
    flat, build = _build(lambda: _flat(vectors))
    measured = _SizeMeasurement(size, probes, flat)
    k = measured.k
    build = replace(build, serialized=faiss.serialize_index(flat).size)
    measured.add_row("flat", "IndexFlatIP", _faiss_searcher(flat, k), build)
    del flat

    progress.update(task, description=f"{size:,} vectors: cache VectorIndex")
    cache, build = _build(lambda: _cache_index(vectors))
    measured.add_row("cache VectorIndex", cache.kind, partial(cache.search, k=k), build)
    del cache

    progress.update(task, description=f"{size:,} vectors: IVF")
    # The cache's rule: about sqrt(n) lists, and at least 39 vectors per list.
    lists = max(1, min(round(math.sqrt(size)), size // 39))
    ivf, build = _build(lambda: _ivf(vectors, lists))
    build = replace(build, serialized=faiss.serialize_index(ivf).size)
    for nprobe in IVF_NPROBES:
        ivf.nprobe = nprobe
        setting = f"{lists} lists, nprobe {nprobe}"
        measured.add_row("IVF", setting, _faiss_searcher(ivf, k), build)
    del ivf

    if hnsw:
        progress.update(task, description=f"{size:,} vectors: HNSW")
        graph, build = _build(lambda: _hnsw(vectors))
        build = replace(build, serialized=faiss.serialize_index(graph).size)
        for ef in HNSW_EF_SEARCH:
            graph.hnsw.efSearch = ef
            setting = f"M {HNSW_M}, efSearch {ef}"
            measured.add_row("HNSW", setting, _faiss_searcher(graph, k), build)
        del graph
    progress.update(task, description=f"{size:,} vectors: done", total=1, completed=1)
    return {
        "size": size,
        "probes": len(probes),
        "probes_above_threshold": int(measured.above.sum()),
        "rows": measured.rows,
    }


def _vectors(kind: str, size: int, centres: Matrix, seed: int) -> Matrix:
    if kind == "planted":
        return planted_vectors(size, DIMENSION, centres, seed)
    return stored_vectors(
        size, DIMENSION, centres if kind == "clustered" else None, seed
    )


def _value(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    """Return the report as a Markdown page, one table per size."""
    setup = report["setup"]
    lines = [
        "# Scale benchmark",
        "",
        f"Command: `{setup['command']}`",
        "",
        f"Started {setup['started_at']} on {setup['machine']}, load average "
        f"{setup['load_before']} before and {report['load_after']} after. Stored "
        f"vectors: {setup['vectors']}; probes: {setup['probes']} real question "
        f"embeddings; k = {setup['k']}.",
        "",
    ]
    for result in report["results"]:
        lines += [
            f"## {result['size']:,} vectors",
            "",
            f"{result['probes_above_threshold']} of {result['probes']} probes have "
            f"an exact nearest neighbour at cosine >= {setup['threshold']}.",
            "",
            "| Index | Setting | Build s | RSS B/vector | Serialized B/vector "
            "| Search p50 ms | p99 ms | Recall@1 | Recall@1 above threshold "
            "| Hits kept |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in result["rows"]:
            lines.append(
                f"| {row['index']} | {row['setting']} | {row['build_s']:.1f} | "
                f"{row['rss_bytes_per_vector']:.0f} | "
                f"{_value(row['serialized_bytes_per_vector'], 0)} | "
                f"{row['search_p50_ms']:.3f} | {row['search_p99_ms']:.3f} | "
                f"{row['recall_at_1']:.3f} | "
                f"{_value(row['recall_at_1_above_threshold'], 3)} | "
                f"{_value(row['hits_kept'], 3)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m benchmarks.bench_scale`."""
    args = parse_args(argv)
    console = Console()
    shown = sys.argv[1:] if argv is None else list(argv)
    settings = CacheSettings()
    report: dict[str, Any] = {
        "setup": {
            "command": " ".join(["python -m benchmarks.bench_scale", *shown]),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()}, {platform.machine()} Linux, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"faiss {faiss.__version__}",
            "load_before": _load_average(),
            "vectors": args.vectors,
            "probes": args.probes,
            "k": settings.search_candidates,
            "threshold": settings.min_cosine_similarity,
        },
        "results": [],
    }
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("embedding probes and centres", total=None)
        try:
            embedder = load_embedder("onnx", None, args.onnx_dir)
            centres, probes = embed_questions(
                embedder, args.data_dir, args.centres, args.probes, args.seed
            )
        except (FileNotFoundError, ValueError) as error:
            console.print(f"error: {error}", style="red", markup=False)
            return 2
        progress.update(task, total=1, completed=1)
        for size in args.size_list:
            vectors = _vectors(args.vectors, size, centres, args.seed + size)
            result = measure_size(
                size, vectors, probes, size <= args.hnsw_max_size, progress
            )
            report["results"].append(result)
            del vectors
    report["load_after"] = _load_average()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.out_dir / "bench-scale.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown_path = args.out_dir / "bench-scale.md"
    markdown_path.write_text(render_markdown(report), encoding="utf-8")
    console.print(f"wrote {json_path}\nwrote {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
