"""Measure how long `ComplexityClassifier.predict` takes on real queries.

``python -m benchmarks.classifier_speed`` loads a classifier artifact, calls
`predict` once per question of the held-out test split (the same queries as
`python -m training evaluate`) and, with ``--sharegpt``, once per ShareGPT first
user turn, then prints p50/p90/p99/max of the wall-clock and the thread CPU time in
milliseconds, overall and by query length. Timing runs on one thread, and
``--cpu N`` also pins the process to CPU N. The 1-minute load average is printed
next to the numbers, because other processes slow the calls down. A benchmark
reports numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from router_service.classifier import ComplexityClassifier, default_artifact_dir
from training import datasets
from training.__main__ import DEFAULT_DATA_DIR

WARMUP_CALLS = 200
LENGTH_BUCKETS = ((0, 200), (200, 1000), (1000, 4000), (4000, 16_000))
SHAREGPT_FILE = Path("sharegpt_first_turns") / "sharegpt_first_turns.jsonl"


def time_calls(
    classifier: ComplexityClassifier, queries: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Call `predict` once per query after a warm-up and time each call in ms.

    Returns wall-clock times and the thread's CPU times. Wall-clock time includes
    waits for a CPU while other processes run; CPU time does not.
    """
    for query in queries[:WARMUP_CALLS]:
        classifier.predict(query)
    wall = np.empty(len(queries))
    cpu = np.empty(len(queries))
    for index, query in enumerate(queries):
        started, cpu_started = time.perf_counter(), time.thread_time()
        classifier.predict(query)
        cpu[index] = (time.thread_time() - cpu_started) * 1000
        wall[index] = (time.perf_counter() - started) * 1000
    return wall, cpu


def quantiles(timings: np.ndarray) -> dict[str, float]:
    """Return the count, p50, p90, p99 and max of `timings` (ms)."""
    if not len(timings):
        return {"calls": 0}
    p50, p90, p99 = np.percentile(timings, [50, 90, 99])
    return {
        "calls": len(timings),
        "p50_ms": round(float(p50), 4),
        "p90_ms": round(float(p90), 4),
        "p99_ms": round(float(p99), 4),
        "max_ms": round(float(timings.max()), 4),
    }


def load_queries(data_dir: Path, sharegpt: bool) -> dict[str, list[str]]:
    """Read the test-split questions and, if requested, the ShareGPT first turns."""
    test = datasets.split(datasets.load_all(data_dir))["test"]
    sets = {"test split": [item.text for item in test]}
    if sharegpt:
        path = data_dir / SHAREGPT_FILE
        with path.open(encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle]
        sets["sharegpt first turns"] = [str(row.get("prompt", "")) for row in rows]
    return sets


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.classifier_speed", description=__doc__
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--artifact-dir", type=Path, default=default_artifact_dir())
    parser.add_argument(
        "--sharegpt", action="store_true", help="also time the ShareGPT first turns"
    )
    parser.add_argument(
        "--cpu", type=int, default=None, help="pin the process to this CPU number"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print one line per query set and length bucket."""
    args = build_parser().parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    classifier = ComplexityClassifier.load(args.artifact_dir)
    query_sets = load_queries(args.data_dir, args.sharegpt)
    pinning = "not pinned" if args.cpu is None else f"pinned to CPU {args.cpu}"
    print(
        f"artifact {classifier.version}, {platform.machine()}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {pinning}"
    )
    with threadpool_limits(limits=1):
        for name, queries in query_sets.items():
            load_before = os.getloadavg()[0]
            wall, cpu = time_calls(classifier, queries)
            load_after = os.getloadavg()[0]
            print(
                f"{name}: wall {quantiles(wall)}, thread CPU {quantiles(cpu)} "
                f"(load average {load_before:.1f} before, {load_after:.1f} after)"
            )
            lengths = np.asarray([len(query) for query in queries])
            for low, high in LENGTH_BUCKETS:
                chosen = (lengths >= low) & (lengths < high)
                print(
                    f"  {low}-{high} characters: wall {quantiles(wall[chosen])}, "
                    f"thread CPU {quantiles(cpu[chosen])}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
