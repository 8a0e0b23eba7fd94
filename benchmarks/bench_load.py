"""Load and speed benchmark of both services together, over gRPC.

`python -m benchmarks.bench_load` (what `make bench-load` calls) starts the cache
service (real embedding model and FAISS) and the router (simulator models, so the
model's own time is known) on free ports. It fills the cache with new questions
and times each Route path one call at a time next to its floor (the speed
targets). Then it runs N concurrent clients for a fixed time at each load scale,
each on a fresh stack. It writes the report as JSON and Markdown under --out-dir
and exits with 1 when any load run had a failed call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomlkit
from querygate.router.v1 import router_pb2
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.bench_load_mix import (
    MixShares,
    PoolExhaustedError,
    QueryMix,
    load_mix,
)
from benchmarks.bench_load_report import write_report
from benchmarks.bench_load_run import (
    LoadResult,
    preload,
    run_load,
    run_speed_phase,
    search_index,
)
from benchmarks.bench_load_stats import (
    RequestRecord,
    latency_summary,
    speed_targets,
    summarize_load,
)
from cache_service.embedding import load_embedder
from cache_service.settings import CacheSettings
from router_service.local_stack import LocalStack, StackOptions, StackStartError
from router_service.local_stack_config import default_router_config

REPO = Path(__file__).resolve().parent.parent
TENANT = "bench-load"
MAX_TOKENS = 64
EMBEDDING_DIMENSION = 384


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_load", description=__doc__
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("QUERYGATE_DATA_DIR", REPO.parent / "shared/data")),
        help="folder that contains quora_qqp/qqp_pairs.csv (default: ../shared/data)",
    )
    parser.add_argument(
        "--clients", type=int, default=32, help="concurrent clients at scale 1"
    )
    parser.add_argument(
        "--scales",
        default="1,10",
        help="comma-separated multiples of --clients, one load run each on a "
        "fresh stack (default: 1,10, so 32 and 320 clients)",
    )
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of each load run"
    )
    parser.add_argument(
        "--mix",
        default=MixShares().describe(),
        help="share of exact repeats, paraphrases of sent duplicate questions and "
        f"new questions (default: {MixShares().describe()})",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=20000,
        help="Quora pairs loaded as the question pool (default: 20000)",
    )
    parser.add_argument(
        "--preload",
        type=int,
        default=600,
        help="new questions sent before the measured phases (default: 600)",
    )
    parser.add_argument(
        "--speed-iterations",
        type=int,
        default=200,
        help="iterations of the one-at-a-time speed phase; 0 skips it (default: 200)",
    )
    parser.add_argument(
        "--model-latency-ms",
        type=float,
        default=0.0,
        help="the simulated models' delay per call, in ms (default: 0)",
    )
    parser.add_argument(
        "--embedding-backend",
        choices=("onnx", "onnx-int8", "torch"),
        default="onnx",
        help="the cache's embedding backend, also timed in-process (default: onnx)",
    )
    parser.add_argument("--onnx-dir", type=Path, default=REPO / "var" / "onnx")
    parser.add_argument("--seed", type=int, default=7, help="seed for the mix")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=REPO / "var" / "bench",
        help="folder for bench-load.json and bench-load.md (default: var/bench)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=REPO / ".run" / "bench-load",
        help="folder for the stack's logs, config and data (default: .run/bench-load)",
    )
    args = parser.parse_args(argv)

    try:
        args.mix_shares = MixShares.parse(args.mix)
        args.scale_list = [int(part) for part in args.scales.split(",")]
    except ValueError as error:
        parser.error(f"--mix or --scales: {error}")
    checks = [
        (args.clients >= 1, f"--clients must be at least 1; got {args.clients}"),
        (args.duration > 0, f"--duration must be positive; got {args.duration}"),
        (args.preload >= 1, f"--preload must be at least 1; got {args.preload}"),
        (args.speed_iterations >= 0, "--speed-iterations must be 0 or more"),
        (args.model_latency_ms >= 0, "--model-latency-ms must be 0 or more"),
        (all(s >= 1 for s in args.scale_list), "--scales must be positive integers"),
    ]
    for passed, message in checks:
        if not passed:
            parser.error(message)
    return args


def write_bench_router_config(folder: Path, model_latency_ms: float) -> Path:
    """Write the packaged router config with every model simulated; return its path."""
    document = tomlkit.parse(default_router_config().read_text(encoding="utf-8"))
    for model in document["models"].values():  # type: ignore[union-attr]
        model["backend"] = "simulator"
        model["latency_ms"] = model_latency_ms
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench-router.toml"
    path.write_text(tomlkit.dumps(document), encoding="utf-8")
    return path


def cpu_seconds(pid: int) -> float | None:
    """Return the user plus system CPU time of ``pid`` so far, if readable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    # The command name in brackets may contain spaces, so split after it.
    fields = stat.rpartition(")")[2].split()
    # utime and stime are fields 14 and 15 of proc(5), here 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_used(
    before: dict[str, float | None], after: dict[str, float | None]
) -> dict[str, float | None]:
    """Return the CPU seconds each process used between two readings."""
    used: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        used[name] = None if start is None or end is None else end - start
    return used


def peak_rss_kib(pid: int) -> int | None:
    """Return the peak resident set size (VmHWM) of ``pid`` in KiB, if readable."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages as "1.2/0.9/0.7"."""
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    )


async def _load_with_progress(
    stack: LocalStack,
    mix: QueryMix,
    template: router_pb2.RouteRequest,
    clients: int,
    duration_s: float,
    progress: Progress,
) -> LoadResult:
    paths: Counter[str] = Counter()
    task = progress.add_task(f"load {clients} clients", total=duration_s, info="")

    def count(record: RequestRecord) -> None:
        paths[record.path] += 1

    async def tick() -> None:
        started = time.perf_counter()
        while True:
            shown = "  ".join(f"{p} {n}" for p, n in sorted(paths.items()))
            elapsed = min(duration_s, time.perf_counter() - started)
            progress.update(task, completed=elapsed, info=shown)
            await asyncio.sleep(0.25)

    ticker = asyncio.create_task(tick())
    try:
        return await run_load(
            stack.router_address, mix, template, clients, duration_s, count
        )
    finally:
        ticker.cancel()


def _speed(
    args: argparse.Namespace,
    stack: LocalStack,
    mix: QueryMix,
    template: router_pb2.RouteRequest,
    progress: Progress,
) -> dict[str, Any]:
    embedder = load_embedder(args.embedding_backend, None, args.onnx_dir)
    index = search_index(args.preload, EMBEDDING_DIMENSION, args.seed)
    task = progress.add_task("speed", total=args.speed_iterations, info="")
    load_before = load_average()
    speed = run_speed_phase(
        stack.router_address,
        stack.cache_address,
        mix,
        template,
        embedder,
        index,
        args.speed_iterations,
        CacheSettings().search_candidates,
        on_iteration=lambda: progress.advance(task),
    )
    p50 = {
        name: latency_summary(values)["p50"] for name, values in speed.samples.items()
    }
    targets = speed_targets(p50, args.model_latency_ms)  # type: ignore[arg-type]
    return {
        "iterations": args.speed_iterations,
        "load_before": load_before,
        "load_after": load_average(),
        "parts_ms": {
            name: latency_summary(values) for name, values in speed.samples.items()
        },
        "targets": [target.as_dict() for target in targets],
        "unexpected": speed.unexpected,
    }


def _cpu_readings(stack: LocalStack) -> dict[str, float | None]:
    readings = {child.name: cpu_seconds(child.pid) for child in stack.children}
    readings["benchmark clients"] = time.process_time()
    return readings


def run_scale(
    args: argparse.Namespace,
    clients: int,
    with_speed: bool,
    progress: Progress,
    console: Console,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Start a fresh stack, preload it, optionally time speed, then run the load."""
    stack_dir = args.run_dir / f"clients-{clients}"
    # Each run starts from an empty cache, so all runs start from the same state.
    shutil.rmtree(stack_dir / "data", ignore_errors=True)
    config = write_bench_router_config(stack_dir / "config", args.model_latency_ms)
    options = StackOptions(
        backend="simulator",
        router_port=0,
        cache_port=0,
        llama_port=0,
        run_dir=stack_dir,
        router_config=config,
    )

    mix = load_mix(args.data_dir, args.pairs, args.mix_shares, args.seed)
    template = router_pb2.RouteRequest(tenant=TENANT, max_tokens=MAX_TOKENS)
    console.print(f"Starting the stack for {clients} clients (logs in {stack_dir})")

    with LocalStack(options) as stack:
        preload_task = progress.add_task("preload", total=None, info="")
        preload_paths = asyncio.run(
            preload(stack.router_address, mix, template, args.preload)
        )
        progress.update(preload_task, total=1, completed=1, info=str(preload_paths))
        speed = None
        if with_speed and args.speed_iterations:
            speed = _speed(args, stack, mix, template, progress)
        load_before = load_average()
        cpu_before = _cpu_readings(stack)
        result = asyncio.run(
            _load_with_progress(stack, mix, template, clients, args.duration, progress)
        )
        load_after = load_average()
        cpu = cpu_used(cpu_before, _cpu_readings(stack))
        peaks = {child.name: peak_rss_kib(child.pid) for child in stack.children}
    run = {
        "clients": clients,
        "duration_s": args.duration,
        "load_before": load_before,
        "load_after": load_after,
        "preload_paths": preload_paths,
        "summary": summarize_load(result.records, result.duration_s),
        "cpu_s": cpu,
        "peak_rss_kib": peaks,
    }
    return run, speed


def _setup(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    shown = sys.argv[1:] if argv is None else list(argv)
    return {
        "command": " ".join(["python -m benchmarks.bench_load", *shown]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {platform.machine()} Linux, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        "model_latency_ms": args.model_latency_ms,
        "embedding_backend": args.embedding_backend,
        "mix": args.mix_shares.describe(),
        "pairs": args.pairs,
        "preload": args.preload,
        "seed": args.seed,
        "max_tokens": MAX_TOKENS,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m benchmarks.bench_load`."""
    args = parse_args(argv)
    console = Console()
    # The stack's cache child reads these; the in-process embedder uses the same.
    os.environ["QUERYGATE_CACHE_EMBEDDING_BACKEND"] = args.embedding_backend
    os.environ["QUERYGATE_CACHE_ONNX_DIR"] = str(args.onnx_dir.resolve())
    report: dict[str, Any] = {"setup": _setup(args, argv), "load_runs": []}
    try:
        with _progress(console) as progress:
            for position, scale in enumerate(args.scale_list):
                run, speed = run_scale(
                    args, args.clients * scale, position == 0, progress, console
                )
                report["load_runs"].append(run)
                if speed is not None:
                    report["speed"] = speed
    except (
        FileNotFoundError,
        ValueError,
        StackStartError,
        PoolExhaustedError,
    ) as error:
        console.print(f"error: {error}", style="red", markup=False, highlight=False)
        return 2

    for path in write_report(report, args.out_dir, "bench-load"):
        console.print(f"wrote {path}")
    failed = sum(run["summary"]["paths"]["error"] for run in report["load_runs"])
    if failed:
        console.print(f"{failed} Route calls failed; see errors by status code")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
