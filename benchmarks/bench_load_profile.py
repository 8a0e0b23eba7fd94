"""Profile one service with py-spy while one client sends one Route path in a loop.

`python -m benchmarks.bench_load_profile --path exact --service router` starts both
services as `benchmarks.bench_load` does and fills the cache with new questions.
Then py-spy samples the chosen service for --seconds while one client sends exact
repeats (--path exact) or new questions (--path miss), one at a time. It writes
py-spy's raw collapsed stacks and prints the functions with the largest share of
the samples in which a thread was busy.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc

from benchmarks.bench_load import (
    MAX_TOKENS,
    REPO,
    TENANT,
    write_bench_router_config,
)
from benchmarks.bench_load_mix import MixShares, QueryMix, load_mix
from benchmarks.bench_load_run import preload, route_request
from router_service.local_stack import LocalStack, StackOptions

# Innermost frames of threads that wait, not work: the event loop's poll, idle
# thread-pool workers and condition waits.
IDLE_FRAMES = (
    "EpollSelector.select",
    "_worker (concurrent/futures/thread.py:81)",
    "Condition.wait",
    "Event.wait",
)

_LINE_NUMBER = re.compile(r":\d+\)$")


def busy_shares(raw_lines: Iterable[str]) -> tuple[int, list[tuple[str, float]]]:
    """Return the busy sample count and each function's share of busy samples.

    ``raw_lines`` are py-spy's raw output: frames joined by ";", then a space and
    the sample count. A function counts once per sample however often it is on
    the stack. Line numbers are dropped, so a function's lines add up.
    """
    shares: Counter[str] = Counter()
    busy = 0
    for line in raw_lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if any(marker in frames[-1] for marker in IDLE_FRAMES):
            continue
        count = int(count_text)
        busy += count
        for function in {_LINE_NUMBER.sub(")", frame) for frame in frames}:
            shares[function] += count
    if busy == 0:
        return 0, []
    return busy, [(name, count / busy) for name, count in shares.most_common()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_load_profile", description=__doc__
    )
    parser.add_argument("--path", choices=("exact", "miss"), default="exact")
    parser.add_argument("--service", choices=("router", "cache"), default="router")
    parser.add_argument("--seconds", type=int, default=20, help="sampling time")
    parser.add_argument("--preload", type=int, default=200, help="questions stored")
    parser.add_argument("--top", type=int, default=40, help="functions printed")
    parser.add_argument(
        "--data-dir", type=Path, default=REPO.parent / "shared" / "data"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=REPO / "var" / "bench",
        help="folder for profile-PATH-SERVICE.txt (default: var/bench)",
    )
    args = parser.parse_args(argv)
    if args.seconds < 2:
        parser.error(f"--seconds must be at least 2; got {args.seconds}")
    return args


def _send_loop(target: str, mix: QueryMix, path: str, until: float) -> list[float]:
    """Send one query at a time until ``until`` and return the latencies in ms."""
    template = router_pb2.RouteRequest(tenant=TENANT, max_tokens=MAX_TOKENS)
    latencies: list[float] = []
    with grpc.insecure_channel(target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        while time.monotonic() < until:
            text = mix.sent_question() if path == "exact" else mix.new_query()
            started = time.perf_counter()
            stub.Route(route_request(template, text or ""), timeout=30)
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m benchmarks.bench_load_profile`."""
    args = parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).is_file():
        print("error: py-spy not found: install the dev extra", file=sys.stderr)
        return 2
    run_dir = REPO / ".run" / "bench-load-profile"
    shutil.rmtree(run_dir / "data", ignore_errors=True)
    options = StackOptions(
        backend="simulator",
        router_port=0,
        cache_port=0,
        llama_port=0,
        run_dir=run_dir,
        router_config=write_bench_router_config(run_dir / "config", 0.0),
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    output = args.out_dir / f"profile-{args.path}-{args.service}.txt"

    mix = load_mix(args.data_dir, args.preload * 4 + 10_000, MixShares(), seed=7)
    template = router_pb2.RouteRequest(tenant=TENANT, max_tokens=MAX_TOKENS)
    with LocalStack(options) as stack:
        asyncio.run(preload(stack.router_address, mix, template, args.preload))
        pid = next(c.pid for c in stack.children if c.name == args.service)
        record = [py_spy, "record", "-p", str(pid), "-d", str(args.seconds)]
        sampler = subprocess.Popen(
            [*record, "-r", "250", "-f", "raw", "-o", str(output)],
            stdout=subprocess.DEVNULL,
        )
        # Stop sending a second before py-spy stops, so every request is sampled.
        until = time.monotonic() + args.seconds - 1
        latencies = _send_loop(stack.router_address, mix, args.path, until)
        sampler.wait()

    latencies.sort()
    if latencies:
        p50 = latencies[len(latencies) // 2]
        print(f"{len(latencies)} {args.path} requests, p50 {p50:.2f} ms")
    print(f"stacks in {output}")
    busy, shares = busy_shares(output.read_text(encoding="utf-8").splitlines())
    print(f"{busy} busy samples")
    for name, share in shares[: args.top]:
        print(f"{share:6.1%} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
