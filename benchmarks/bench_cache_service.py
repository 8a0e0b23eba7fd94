"""Drive the real cache service for ``make bench-cache``: start, replay, time.

The service runs as its own process (``python -m cache_service``, ONNX backend,
FAISS, gRPC on 127.0.0.1 and a port chosen by the OS), with its database in a
temporary folder. Each labelled pair gets its own tenant: the first query is
stored, then the second is looked up, so the scope contains exactly one entry and no
pair can hit another pair's entry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from benchmarks.bench_cache_stats import PairOutcome
from benchmarks.cache_latency import wait_until_serving
from cache_service.pair_eval import LabelledPair

CALL_TIMEOUT_S = 60.0
SPEED_TENANT = "bench-speed"
LAYER_NAMES = {
    cache_pb2.HIT_LAYER_EXACT: "exact",
    cache_pb2.HIT_LAYER_SEMANTIC: "semantic",
}


@dataclass(frozen=True)
class ReplayedPair:
    """One pair's lookup result and the layer that served it ("" on a miss)."""

    set_name: str
    outcome: PairOutcome
    layer: str


@dataclass(frozen=True)
class ServiceOptions:
    """How to start the cache service for one run."""

    false_hit_guard: str
    onnx_dir: Path
    workdir: Path
    embedding_backend: str = "onnx"


@dataclass(frozen=True)
class ServiceProcess:
    """A started cache service: the address to dial and its process id."""

    target: str
    pid: int


@contextmanager
def running_service(options: ServiceOptions) -> Iterator[ServiceProcess]:
    """Start the cache service, yield it once SERVING, then stop it.

    The service's log goes to ``service-<guard>.log`` in the work folder.

    Raises:
        RuntimeError: the service exited or was not SERVING in time.
    """
    options.workdir.mkdir(parents=True, exist_ok=True)
    port_file = options.workdir / f"cache-{options.false_hit_guard}.port"
    port_file.unlink(missing_ok=True)
    env = {key: value for key, value in os.environ.items() if "QUERYGATE_" not in key}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        QUERYGATE_CACHE_ADDRESS="127.0.0.1:0",
        QUERYGATE_CACHE_DATA_DIR=str(
            options.workdir / f"data-{options.false_hit_guard}"
        ),
        QUERYGATE_CACHE_EMBEDDING_BACKEND=options.embedding_backend,
        QUERYGATE_CACHE_ONNX_DIR=str(options.onnx_dir.resolve()),
        QUERYGATE_CACHE_FALSE_HIT_GUARD=options.false_hit_guard,
        QUERYGATE_LOG_LEVEL="WARNING",
    )
    command = [sys.executable, "-m", "cache_service", "--port-file", str(port_file)]
    # setpriv (util-linux) makes the kernel send SIGTERM to the service when this
    # process dies, so a benchmark killed with SIGTERM or SIGKILL leaves no orphan.
    setpriv = shutil.which("setpriv")
    if setpriv is not None and sys.platform.startswith("linux"):
        command = [setpriv, "--pdeathsig", "SIGTERM", "--", *command]
    log_path = options.workdir / f"service-{options.false_hit_guard}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        try:
            try:
                target = wait_until_serving(port_file, process)
            except (RuntimeError, grpc.RpcError) as error:
                # A service that fails to load its model or guard exits while the
                # health check polls it, which surfaces as an RpcError.
                raise RuntimeError(
                    f"the cache service did not start ({error}); see {log_path}"
                ) from None
            yield ServiceProcess(target, process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def replay_pairs(
    target: str,
    pairs: Sequence[tuple[str, int, LabelledPair]],
    min_similarity: float,
    concurrency: int,
    advance: Callable[[], None],
) -> list[ReplayedPair]:
    """Store each pair's first query and look up its second, under its own tenant.

    ``pairs`` contains (set name, tenant number, pair) tuples. The lookup requests
    ``min_similarity``, the lowest threshold of the sweep. ``advance`` is called
    once per pair, from worker threads. Results come back in input order.

    Raises:
        grpc.RpcError: a Store or Lookup failed.
    """
    with grpc.insecure_channel(target) as channel:
        stub = cache_pb2_grpc.CacheServiceStub(channel)

        def run(item: tuple[str, int, LabelledPair]) -> ReplayedPair:
            set_name, number, pair = item
            scope = cache_pb2.Scope(tenant=f"bench-{number}", model="auto")
            stub.Store(
                cache_pb2.StoreRequest(
                    query=pair.first,
                    scope=scope,
                    answer=f"answer {number}",
                    finish_reason="stop",
                ),
                timeout=CALL_TIMEOUT_S,
            )
            response = stub.Lookup(
                cache_pb2.LookupRequest(
                    query=pair.second, scope=scope, min_similarity=min_similarity
                ),
                timeout=CALL_TIMEOUT_S,
            )
            advance()
            outcome = PairOutcome(pair.same_meaning, response.hit, response.similarity)
            layer = LAYER_NAMES.get(response.layer, "") if response.hit else ""
            return ReplayedPair(set_name, outcome, layer)

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(run, pairs))


class SpeedClient:
    """Client that stores entries under one tenant and looks queries up.

    One channel is shared by every client thread, as a service would share one.
    """

    def __init__(self, target: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = cache_pb2_grpc.CacheServiceStub(self._channel)
        self._scope = cache_pb2.Scope(tenant=SPEED_TENANT, model="auto")

    def store_all(self, queries: Sequence[str], concurrency: int) -> None:
        """Store one answer per query.

        Raises:
            grpc.RpcError: a Store failed.
        """

        def store(query: str) -> None:
            self._stub.Store(
                cache_pb2.StoreRequest(
                    query=query,
                    scope=self._scope,
                    answer="cached answer",
                    finish_reason="stop",
                ),
                timeout=CALL_TIMEOUT_S,
            )

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(store, queries))

    def lookup(self, query: str) -> bool:
        """Look ``query`` up at the service's own threshold and return whether it hit.

        Raises:
            grpc.RpcError: the Lookup failed.
        """
        request = cache_pb2.LookupRequest(query=query, scope=self._scope)
        return bool(self._stub.Lookup(request, timeout=CALL_TIMEOUT_S).hit)

    def close(self) -> None:
        self._channel.close()
