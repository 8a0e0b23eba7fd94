"""Replay real Quora questions through the router and report hits, cost and latency.

`python -m benchmarks.replay` (what `make demo` calls) starts the local stack on free
ports, sends both questions of randomly chosen Quora pairs over gRPC, shuffled and with
exact repeats, and writes the report as JSON and Markdown. `--router-address` replays
against a stack that is already running instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from benchmarks.replay_plan import PlannedQuery, build_plan, load_pairs
from benchmarks.replay_report import QueryResult, render_markdown, summarize
from router_service.local_stack import LocalStack, StackOptions, StackStartError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PAIRS = {"local": 150, "simulator": 1500}
TENANT = "replay"
# Short answers keep the local model fast and within max_tokens.
DEFAULT_SYSTEM_PROMPT = "Answer in one or two short sentences."
CALL_TIMEOUT_S = 120.0

_STATUS_NAMES = {
    router_pb2.CACHE_STATUS_MISS: "miss",
    router_pb2.CACHE_STATUS_EXACT_HIT: "exact_hit",
    router_pb2.CACHE_STATUS_SEMANTIC_HIT: "semantic_hit",
    router_pb2.CACHE_STATUS_BYPASSED: "bypassed",
    router_pb2.CACHE_STATUS_UNAVAILABLE: "unavailable",
    router_pb2.CACHE_STATUS_SHARED: "shared",
}
_TIER_NAMES = {
    router_pb2.TIER_SIMPLE: "simple",
    router_pb2.TIER_MEDIUM: "medium",
    router_pb2.TIER_COMPLEX: "complex",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.replay", description=__doc__
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("QUERYGATE_DATA_DIR", REPO.parent / "shared/data")),
        help="folder that contains quora_qqp/qqp_pairs.csv (default: ../shared/data)",
    )

    parser.add_argument("--backend", choices=tuple(DEFAULT_PAIRS), default="local")
    parser.add_argument(
        "--pairs",
        type=int,
        help="question pairs to replay, two queries each "
        f"(default: {DEFAULT_PAIRS['local']} local, "
        f"{DEFAULT_PAIRS['simulator']} simulator)",
    )
    parser.add_argument(
        "--repeat-fraction",
        type=float,
        default=0.1,
        help="share of questions sent a second time, verbatim (default: 0.1)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed for sampling")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=128,
        help="max_tokens of every request (default: 128). The router does not cache "
        "an answer cut off at this limit, so a low value lowers the hit rate",
    )
    parser.add_argument(
        "--system-prompt",
        default=DEFAULT_SYSTEM_PROMPT,
        help=f"system prompt of every request (default: {DEFAULT_SYSTEM_PROMPT!r})",
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="Route calls in flight at once"
    )

    parser.add_argument(
        "--run-dir",
        type=Path,
        default=REPO / ".run" / "replay",
        help="folder for the stack's logs and for the report (default: .run/replay)",
    )
    parser.add_argument(
        "--router-address",
        help="replay against a router already running at HOST:PORT; "
        "starts no processes",
    )
    args = parser.parse_args(argv)

    if args.pairs is None:
        args.pairs = DEFAULT_PAIRS[args.backend]
    if args.pairs < 1:
        parser.error(f"--pairs must be at least 1; got {args.pairs}")
    if not 0 <= args.repeat_fraction <= 1:
        parser.error(f"--repeat-fraction must be in [0, 1]; got {args.repeat_fraction}")
    if args.concurrency < 1:
        parser.error(f"--concurrency must be at least 1; got {args.concurrency}")
    return args


def route_one(
    stub: router_pb2_grpc.RouterServiceStub,
    query: PlannedQuery,
    template: router_pb2.RouteRequest,
) -> QueryResult:
    """Send one query with the fields of template and record the outcome.

    A gRPC error becomes a result with cache status "error" and the status code.
    """
    request = router_pb2.RouteRequest()
    request.CopyFrom(template)
    request.query = query.text
    started = time.perf_counter()
    try:
        response = stub.Route(request, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as error:
        elapsed_ms = (time.perf_counter() - started) * 1000
        code = error.code().name  # type: ignore[attr-defined]
        return QueryResult(query, "error", elapsed_ms, error_code=code)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return QueryResult(
        query=query,
        cache_status=_STATUS_NAMES.get(response.cache_status, "unspecified"),
        latency_ms=elapsed_ms,
        tier=_TIER_NAMES.get(response.tier, ""),
        model=response.model,
        similarity=response.similarity,
        cost_usd=response.cost_usd,
        baseline_cost_usd=response.baseline_cost_usd,
        cache_entry_id=response.cache_entry_id,
    )


def replay(
    router_address: str,
    plan: list[PlannedQuery],
    template: router_pb2.RouteRequest,
    concurrency: int,
    console: Console,
) -> list[QueryResult]:
    """Send every planned query, showing progress, and return results in plan order.

    Every request copies template (tenant, system prompt, max_tokens). With
    concurrency above 1, queries go out from a thread pool in plan order, so later
    queries may overtake earlier ones.
    """
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with grpc.insecure_channel(router_address) as channel, progress:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        task = progress.add_task("replay", total=len(plan), counts="")

        def send(query: PlannedQuery) -> QueryResult:
            result = route_one(stub, query, template)
            with lock:
                counts[result.cache_status] += 1
                shown = "  ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                progress.update(task, advance=1, counts=shown)
            return result

        if concurrency == 1:
            return [send(query) for query in plan]
        pool = ThreadPoolExecutor(max_workers=concurrency)
        try:
            return list(pool.map(send, plan))
        finally:
            # On Ctrl-C, drop the queries not yet sent instead of sending them all.
            pool.shutdown(wait=True, cancel_futures=True)


def write_report(report: dict[str, Any], folder: Path, stem: str) -> list[Path]:
    """Write report as stem.json and stem.md in folder and return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{stem}.json"
    markdown_path = folder / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown_path.write_text(render_markdown(report), encoding="utf-8")
    return [json_path, markdown_path]


def _run_description(
    args: argparse.Namespace, plan: list[PlannedQuery], started_at: datetime
) -> dict[str, Any]:
    return {
        "started_at": started_at.isoformat(timespec="seconds"),
        "backend": args.backend,
        "data_file": str(args.data_dir / "quora_qqp" / "qqp_pairs.csv"),
        "pairs": args.pairs,
        "repeats": sum(1 for query in plan if query.repeat),
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "system_prompt": args.system_prompt,
        "concurrency": args.concurrency,
        "machine": f"{platform.machine()} Linux, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
    }


def _timed_replay(
    args: argparse.Namespace, address: str, plan: list[PlannedQuery], console: Console
) -> tuple[list[QueryResult], float]:
    started = time.monotonic()
    template = router_pb2.RouteRequest(
        tenant=TENANT, system_prompt=args.system_prompt, max_tokens=args.max_tokens
    )
    results = replay(address, plan, template, args.concurrency, console)
    return results, time.monotonic() - started


def _replay_on_stack(
    args: argparse.Namespace, plan: list[PlannedQuery], console: Console
) -> tuple[list[QueryResult], float]:
    """Replay against --router-address, or start a stack, replay and stop it."""
    if args.router_address:
        return _timed_replay(args, args.router_address, plan, console)
    stack_dir = args.run_dir / f"stack-{args.backend}"
    # Start from an empty cache, so that every hit comes from this replay.
    shutil.rmtree(stack_dir / "data", ignore_errors=True)
    options = StackOptions(
        backend=args.backend,
        router_port=0,
        cache_port=0,
        llama_port=0,
        run_dir=stack_dir,
    )
    console.print(f"Starting the {args.backend} stack (logs in {stack_dir / 'logs'})")
    with LocalStack(options) as stack:
        console.print(
            f"Router at {stack.router_address}; replaying {len(plan)} queries"
        )
        return _timed_replay(args, stack.router_address, plan, console)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m benchmarks.replay`."""
    args = parse_args(argv)
    console = Console()
    rng = random.Random(args.seed)
    try:
        pairs = load_pairs(args.data_dir, args.pairs, rng)
    except (FileNotFoundError, ValueError) as error:
        console.print(f"error: {error}", style="red", markup=False, highlight=False)
        return 2
    plan = build_plan(pairs, args.repeat_fraction, rng)

    started_at = datetime.now(UTC)
    try:
        results, duration_s = _replay_on_stack(args, plan, console)
    except StackStartError as error:
        console.print(f"error: {error}", style="red", markup=False, highlight=False)
        return 1
    run = _run_description(args, plan, started_at) | {"duration_s": duration_s}

    report = summarize(results, run)
    console.print(Markdown(render_markdown(report)))
    for path in write_report(report, args.run_dir, f"replay-{args.backend}"):
        console.print(f"wrote {path}")
    return 1 if report["cache_status"]["error"] == len(results) else 0


if __name__ == "__main__":
    sys.exit(main())
