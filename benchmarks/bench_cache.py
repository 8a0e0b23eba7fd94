"""Measure hit rate, false hits and lookup speed of the cache, next to GPTCache.

``python -m benchmarks.bench_cache`` (what ``make bench-cache`` runs) samples
labelled pairs, starts the real cache service once per false-hit guard mode and
replays every pair over gRPC: it stores the first query under a tenant of its own
and looks up the second. It then times lookups from 1 and 32 concurrent clients.
When ``.venv-bench`` exists, GPTCache runs the same pairs and workload in that
environment (``benchmarks.gptcache_runner``). The report goes to ``var/bench/`` as
JSON, Markdown and a PNG plot.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from benchmarks.bench_cache_data import (
    BUILT_IN_SETS,
    PairSet,
    PairsFileError,
    guard_training_pairs,
    load_built_in,
    read_pairs_file,
    sample_pairs,
)
from benchmarks.bench_cache_report import write_report
from benchmarks.bench_cache_service import (
    ReplayedPair,
    ServiceOptions,
    replay_pairs,
    running_service,
)
from benchmarks.bench_cache_speed import (
    ServiceSpeed,
    speed_section,
    speed_workload,
    time_service,
)
from benchmarks.bench_cache_stats import sweep, threshold_grid
from benchmarks.gptcache_compare import run_gptcache

REPO = Path(__file__).resolve().parent.parent
GUARD_MODES = ("off", "rules", "on")
GUARD_TRAINING_SETS = {"quora_qqp", "paws_wiki", "fow_cache_pairs"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("QUERYGATE_DATA_DIR", REPO.parent / "shared/data")),
        help="shared data folder (default: ../shared/data or QUERYGATE_DATA_DIR)",
    )
    parser.add_argument(
        "--sets",
        help="comma-separated built-in sets, from "
        f"{','.join(BUILT_IN_SETS)} (default: all, or none with --pairs-file)",
    )
    parser.add_argument(
        "--pairs-file",
        type=Path,
        action="append",
        default=[],
        help="your own labelled pairs, CSV or JSONL with columns a, b, same_answer "
        "(see docs/benchmarks.md); repeat for several files",
    )
    parser.add_argument(
        "--pairs", type=int, default=400, help="pairs sampled per set (default: 400)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")

    parser.add_argument(
        "--guard-modes",
        default="off,on",
        help="false-hit guard modes to run, from off,rules,on (default: off,on)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.85,
        help="cosine threshold of the headline table and the speed runs "
        "(default: 0.85, the service default)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="pairs replayed at once (default: 4)"
    )

    parser.add_argument(
        "--speed-lookups",
        type=int,
        default=400,
        help="lookups per speed run; 0 skips the speed runs (default: 400)",
    )
    parser.add_argument(
        "--speed-entries",
        type=int,
        default=500,
        help="entries stored before the speed runs (default: 500)",
    )
    parser.add_argument(
        "--clients", default="1,32", help="concurrent clients per speed run"
    )

    parser.add_argument(
        "--gptcache",
        choices=("auto", "on", "off"),
        default="auto",
        help="run GPTCache too: auto runs it when its Python exists, on fails "
        "without it (default: auto)",
    )
    parser.add_argument(
        "--gptcache-python",
        type=Path,
        default=REPO / ".venv-bench" / "bin" / "python",
        help="Python of the environment with gptcache (default: .venv-bench)",
    )
    parser.add_argument(
        "--gptcache-dir",
        type=Path,
        help="folder for GPTCache's SQLite and FAISS files, for example on tmpfs "
        "(default: a temporary folder, which the run removes)",
    )
    parser.add_argument(
        "--gptcache-embeddings",
        default="onnx,sbert",
        help="GPTCache embedding functions to time, onnx and/or sbert; the first "
        "one also replays the pairs (default: onnx,sbert)",
    )

    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the speed runs, record both caches with py-spy (from "
        ".venv-bench) during one more run with the most clients, and list where "
        "their time goes",
    )
    parser.add_argument(
        "--onnx-dir",
        type=Path,
        default=REPO / "var" / "onnx",
        help="ONNX export of the embedding model (default: var/onnx)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=REPO / "var" / "bench",
        help="folder for the report (default: var/bench)",
    )
    parser.add_argument("--name", default="bench-cache", help="report file name stem")
    args = parser.parse_args(argv)
    _check_args(parser, args)
    return args


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.sets is None:
        args.sets = "" if args.pairs_file else ",".join(BUILT_IN_SETS)
    args.set_names = [name.strip() for name in args.sets.split(",") if name.strip()]
    unknown = sorted(set(args.set_names) - set(BUILT_IN_SETS))
    if unknown:
        parser.error(f"--sets has unknown names {unknown}; choose from {BUILT_IN_SETS}")
    if not args.set_names and not args.pairs_file:
        parser.error("no pairs to run: name --sets or give --pairs-file")
    args.modes = [mode.strip() for mode in args.guard_modes.split(",") if mode.strip()]
    if not args.modes or not set(args.modes) <= set(GUARD_MODES):
        parser.error(f"--guard-modes must list off, rules or on; got {args.modes}")
    if args.pairs < 1:
        parser.error(f"--pairs must be at least 1; got {args.pairs}")
    if not 0.70 <= args.threshold <= 0.95:
        parser.error(
            f"--threshold must be in the sweep, 0.70 to 0.95; got {args.threshold}"
        )
    if args.concurrency < 1:
        parser.error(f"--concurrency must be at least 1; got {args.concurrency}")
    if args.speed_lookups < 0 or args.speed_entries < 1:
        parser.error("--speed-lookups must be 0 or more and --speed-entries 1 or more")
    args.py_spy = None
    if args.profile:
        args.py_spy = args.gptcache_python.parent / "py-spy"
        if not args.py_spy.exists():
            parser.error(f"--profile needs {args.py_spy}; run make bench-venv")
    try:
        args.client_counts = [int(value) for value in args.clients.split(",")]
    except ValueError:
        parser.error(
            f"--clients must be integers separated by commas; got {args.clients}"
        )
    if any(count < 1 for count in args.client_counts):
        parser.error(f"--clients must all be at least 1; got {args.clients}")


def load_sets(args: argparse.Namespace) -> list[PairSet]:
    """Read the chosen built-in sets and the user's pairs files.

    Raises:
        PairsFileError: a pairs file is invalid.
    """
    exclude: set[tuple[str, str]] = set()
    if GUARD_TRAINING_SETS & set(args.set_names):
        exclude = guard_training_pairs(args.data_dir)
    sets = [
        load_built_in(name, args.data_dir, args.pairs, args.seed, exclude)
        for name in args.set_names
    ]
    for path in args.pairs_file:
        pairs = read_pairs_file(path)
        name = path.stem
        if name in {item.name for item in sets}:
            name = f"{name}-{len(sets)}"
        sets.append(
            PairSet(name, sample_pairs(pairs, args.pairs, args.seed), len(pairs))
        )
    return sets


def replay_mode(
    mode: str, sets: list[PairSet], args: argparse.Namespace, workdir: Path
) -> tuple[list[ReplayedPair], ServiceSpeed | None]:
    """Replay every pair against a service in guard ``mode``; time it when it serves."""
    items = [
        (item.name, number, pair)
        for number, (item, pair) in enumerate(
            (item, pair) for item in sets for pair in item.pairs
        )
    ]
    options = ServiceOptions(
        false_hit_guard=mode, onnx_dir=args.onnx_dir, workdir=workdir
    )
    progress = Progress(
        TextColumn(f"[bold]guard {mode}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with running_service(options) as service, progress:
        task = progress.add_task("replay", total=len(items))
        replayed = replay_pairs(
            service.target,
            items,
            min_similarity=min(args.thresholds),
            concurrency=args.concurrency,
            advance=lambda: progress.advance(task),
        )
        speed = None
        if mode == args.speed_mode and args.speed_lookups:
            workload = speed_workload(sets, args)
            speed = time_service(service, workload, args, workdir)
    return replayed, speed


def querygate_section(
    replayed: list[ReplayedPair], args: argparse.Namespace
) -> dict[str, Any]:
    """Sweep the thresholds for each set of one guard mode."""
    section: dict[str, Any] = {}
    for set_name in dict.fromkeys(item.set_name for item in replayed):
        found = [item for item in replayed if item.set_name == set_name]
        section[set_name] = {
            "exact_hits": sum(item.layer == "exact" for item in found),
            "sweep": [
                rates.to_json()
                for rates in sweep([item.outcome for item in found], args.thresholds)
            ],
        }
    return section


def current_commit() -> str:
    """Return the short commit id, marked when the working tree has changes."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    clean = (
        subprocess.run(
            ["git", "diff", "--quiet", "HEAD"], cwd=REPO, check=False
        ).returncode
        == 0
    )
    if not commit:
        return "unknown"
    return commit if clean else f"{commit} with uncommitted changes"


def run_info(args: argparse.Namespace, load_before: float) -> dict[str, Any]:
    """Describe the run: command, date, commit at the start, machine and load."""
    return {
        "command": "python -m benchmarks.bench_cache " + " ".join(sys.argv[1:]),
        "date": f"{args.started:%Y-%m-%d %H:%M}-{datetime.now(UTC):%H:%M} UTC",
        "commit": args.commit,
        "machine": f"{platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "cpus": os.cpu_count() or 1,
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "seed": args.seed,
        "pairs_per_set": args.pairs,
        "guard_modes": args.modes,
        "default_threshold": args.threshold,
        "thresholds": args.thresholds,
        "table_thresholds": args.table_thresholds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    console = Console(stderr=True)
    load_before = os.getloadavg()[0]
    args.commit = current_commit()
    args.started = datetime.now(UTC)
    args.thresholds = threshold_grid(0.70, 0.95, 0.01)
    args.table_thresholds = threshold_grid(0.70, 0.95, 0.05)
    args.speed_mode = "on" if "on" in args.modes else args.modes[-1]
    try:
        sets = load_sets(args)
    except (PairsFileError, OSError, KeyError) as error:
        console.print(f"cannot read the pairs: {error}", style="red", markup=False)
        return 2

    querygate: dict[str, Any] = {}
    ours: ServiceSpeed | None = None
    workload = speed_workload(sets, args) if args.speed_lookups else None
    args.speed_entries_stored = len(workload[0]) if workload else 0
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as scratch:
        workdir = Path(scratch)
        try:
            for mode in args.modes:
                replayed, speed = replay_mode(mode, sets, args, workdir)
                querygate[mode] = querygate_section(replayed, args)
                ours = ours or speed
            gptcache = run_gptcache(sets, workload, args, workdir, console)
        except RuntimeError as error:
            console.print(str(error), style="red", markup=False)
            return 1

    report = {
        "run": run_info(args, load_before),
        "sets": {
            item.name: {
                "pairs": len(item.pairs),
                "same_meaning": sum(pair.same_meaning for pair in item.pairs),
                "different": sum(not pair.same_meaning for pair in item.pairs),
                "available": item.available,
                "excluded_guard_training": item.excluded_guard_training,
                "excluded_ambiguous": item.excluded_ambiguous,
            }
            for item in sets
        },
        "querygate": querygate,
        "gptcache": gptcache,
        "speed": speed_section(ours, gptcache, args),
    }
    for path in write_report(report, args.out_dir, args.name):
        console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
