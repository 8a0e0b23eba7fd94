"""Measure cache latency through gRPC: exact hit, semantic hit, miss and the floor.

``python benchmarks/cache_latency.py --backend onnx`` starts ``python -m
cache_service`` as its own process on a free port, stores Quora questions in one
scope, then times Lookup RPCs from this process and prints p50 and p99 per outcome.
The floor is a ``grpc.health.v1`` Check on the same channel: a round trip that does
no cache work. A measurement script, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service.pair_eval import DEFAULT_DATA_DIR, LabelledPair, load_quora

START_TIMEOUT_S = 300.0
SCOPE = cache_pb2.Scope(tenant="bench", model="auto")
Response = TypeVar("Response")


def start_server(
    backend: str, onnx_dir: Path, workdir: Path
) -> subprocess.Popen[bytes]:
    """Start the cache service process on ``backend``, storing under ``workdir``."""
    port_file = workdir / "cache.port"
    env = {key: value for key, value in os.environ.items() if "QUERYGATE_" not in key}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        QUERYGATE_CACHE_ADDRESS="127.0.0.1:0",
        QUERYGATE_CACHE_DATA_DIR=str(workdir / "data"),
        QUERYGATE_CACHE_EMBEDDING_BACKEND=backend,
        QUERYGATE_CACHE_ONNX_DIR=str(onnx_dir.resolve()),
        QUERYGATE_LOG_LEVEL="WARNING",
    )
    command = [sys.executable, "-m", "cache_service", "--port-file", str(port_file)]
    return subprocess.Popen(command, env=env)


def wait_until_serving(port_file: Path, process: subprocess.Popen[bytes]) -> str:
    """Return the server target once its health check reports SERVING."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                "the cache service exited or timed out before writing its port file"
            )
        time.sleep(0.1)
    target = f"127.0.0.1:{port_file.read_text().strip()}"
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            status = health.Check(health_pb2.HealthCheckRequest()).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return target
            time.sleep(0.2)
    raise RuntimeError(f"the cache service was not SERVING after {START_TIMEOUT_S} s")


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    """Return (p50, p99) of ``samples_ms`` by nearest rank."""
    ordered = sorted(samples_ms)
    ranks = [min(len(ordered) - 1, int(len(ordered) * share)) for share in (0.5, 0.99)]
    return ordered[ranks[0]], ordered[ranks[1]]


def timed(call: Callable[[], Response]) -> tuple[float, Response]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def measure(
    target: str, pairs: list[LabelledPair], others: list[str]
) -> dict[str, list[float]]:
    """Store each pair's first question, then time exact, semantic and miss lookups."""
    samples: dict[str, list[float]] = {
        "floor": [],
        "exact": [],
        "semantic": [],
        "miss": [],
    }
    with grpc.insecure_channel(target) as channel:
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        for pair in pairs:
            cache.Store(
                cache_pb2.StoreRequest(
                    query=pair.first,
                    scope=SCOPE,
                    answer="cached answer",
                    finish_reason="stop",
                )
            )

        def lookup(text: str) -> Callable[[], cache_pb2.LookupResponse]:
            request = cache_pb2.LookupRequest(query=text, scope=SCOPE)
            return lambda: cache.Lookup(request)

        # Warm up connections, code paths and the model.
        for pair in pairs[:20]:
            lookup(pair.second)()
            health.Check(health_pb2.HealthCheckRequest())

        # Interleave the kinds, so a burst of load on the machine hits all of them.
        for pair, other in zip(pairs, others, strict=False):
            duration, _ = timed(lambda: health.Check(health_pb2.HealthCheckRequest()))
            samples["floor"].append(duration)
            duration, response = timed(lookup(pair.first))
            if response.layer == cache_pb2.HIT_LAYER_EXACT:
                samples["exact"].append(duration)
            duration, response = timed(lookup(pair.second))
            if response.hit and response.layer == cache_pb2.HIT_LAYER_SEMANTIC:
                samples["semantic"].append(duration)
            duration, response = timed(lookup(other))
            if not response.hit:
                samples["miss"].append(duration)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", choices=("torch", "onnx", "onnx-int8"), default="onnx"
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--onnx-dir", type=Path, default=Path("var/onnx"))
    parser.add_argument("--entries", type=int, default=600, help="stored questions")
    args = parser.parse_args(argv)

    quora = load_quora(args.data_dir)
    random.Random(0).shuffle(quora)
    duplicates = [pair for pair in quora if pair.same_meaning][: args.entries]
    stored = {pair.first for pair in duplicates}
    others = [
        pair.first
        for pair in quora
        if not pair.same_meaning and pair.first not in stored
    ]

    with tempfile.TemporaryDirectory(prefix="cache-latency-") as scratch:
        workdir = Path(scratch)
        process = start_server(args.backend, args.onnx_dir, workdir)
        try:
            target = wait_until_serving(workdir / "cache.port", process)
            samples = measure(target, duplicates, others)
        finally:
            process.terminate()
            process.wait(timeout=30)

    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.node()}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; backend: {args.backend}"
    )
    print(f"{'lookup':<10}{'samples':>8}{'p50 ms':>8}{'p99 ms':>8}")
    for kind, values in samples.items():
        if values:
            p50, p99 = percentiles(values)
            print(f"{kind:<10}{len(values):>8}{p50:>8.2f}{p99:>8.2f}")
        else:
            print(f"{kind:<10}{0:>8}{'-':>8}{'-':>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
