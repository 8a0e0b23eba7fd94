"""The two measuring phases of the load benchmark: concurrent load and speed.

The load phase runs N concurrent gRPC clients on one asyncio event loop, each on
its own channel and TCP connection, for a fixed time. The speed phase sends one
request at a time and interleaves Route calls with the parts of their floors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import faiss
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc

from benchmarks.bench_load_mix import QueryMix
from benchmarks.bench_load_stats import RequestRecord
from cache_service.embedding import Embedder
from cache_service.vector_index import VectorIndex

CALL_TIMEOUT_S = 60.0
PATH_NAMES = {
    router_pb2.CACHE_STATUS_MISS: "miss",
    router_pb2.CACHE_STATUS_EXACT_HIT: "exact_hit",
    router_pb2.CACHE_STATUS_SEMANTIC_HIT: "semantic_hit",
    router_pb2.CACHE_STATUS_BYPASSED: "bypassed",
    router_pb2.CACHE_STATUS_UNAVAILABLE: "unavailable",
    router_pb2.CACHE_STATUS_SHARED: "shared",
}
# Each client gets its own connection, as separate client processes would. By
# default gRPC shares one connection among channels to the same target.
_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def route_request(
    template: router_pb2.RouteRequest, text: str
) -> router_pb2.RouteRequest:
    """Return a copy of ``template`` with ``text`` as its query."""
    request = router_pb2.RouteRequest()
    request.CopyFrom(template)
    request.query = text
    return request


@dataclass
class LoadResult:
    """The records of one load phase and its wall time in seconds."""

    records: list[RequestRecord] = field(default_factory=list)
    duration_s: float = 0.0


async def run_load(
    target: str,
    mix: QueryMix,
    template: router_pb2.RouteRequest,
    clients: int,
    duration_s: float,
    on_record: Callable[[RequestRecord], None] | None = None,
) -> LoadResult:
    """Send Route calls from ``clients`` concurrent clients for ``duration_s``.

    Each client sends its next request as soon as the last one returns and
    stops sending once ``duration_s`` has passed. The duration of the result
    runs until the last response, so late responses count at their real time.
    """
    result = LoadResult()
    channels = [
        grpc.aio.insecure_channel(target, options=_OWN_CONNECTION)
        for _ in range(clients)
    ]
    started = time.perf_counter()
    stop_at = started + duration_s

    async def client(channel: grpc.aio.Channel) -> None:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        while time.perf_counter() < stop_at:
            query = mix.draw()
            request = route_request(template, query.text)
            sent = time.perf_counter()
            try:
                response = await stub.Route(request, timeout=CALL_TIMEOUT_S)
                path, code = PATH_NAMES.get(response.cache_status, "unspecified"), ""
            except grpc.aio.AioRpcError as error:
                path, code = "error", error.code().name
            record = RequestRecord(
                query.kind, path, (time.perf_counter() - sent) * 1000, code
            )
            result.records.append(record)
            if on_record is not None:
                on_record(record)

    try:
        await asyncio.gather(*(client(channel) for channel in channels))
    finally:
        result.duration_s = time.perf_counter() - started
        await asyncio.gather(*(channel.close() for channel in channels))
    return result


async def preload(
    target: str,
    mix: QueryMix,
    template: router_pb2.RouteRequest,
    count: int,
    concurrency: int = 4,
) -> dict[str, int]:
    """Send ``count`` new questions so that repeats and paraphrases have targets.

    Returns how many requests took each path.
    """
    paths: dict[str, int] = {}
    texts = [mix.new_query() for _ in range(count)]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)

        async def send_all(chunk: list[str]) -> None:
            for text in chunk:
                try:
                    response = await stub.Route(
                        route_request(template, text), timeout=CALL_TIMEOUT_S
                    )
                    path = PATH_NAMES.get(response.cache_status, "unspecified")
                except grpc.aio.AioRpcError as error:
                    path = f"error {error.code().name}"
                paths[path] = paths.get(path, 0) + 1

        await asyncio.gather(
            *(send_all(texts[i::concurrency]) for i in range(concurrency))
        )
    return paths


@dataclass
class SpeedSamples:
    """Latencies in ms of each kind of the speed phase."""

    samples: dict[str, list[float]] = field(
        default_factory=lambda: {
            name: []
            for name in (
                "router_round_trip",
                "cache_round_trip",
                "embedding",
                "search",
                "exact_hit",
                "semantic_hit",
                "miss",
            )
        }
    )
    # Route calls whose path was not the one the step expected, by step and path.
    unexpected: dict[str, int] = field(default_factory=dict)


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def search_index(size: int, dimension: int, seed: int) -> VectorIndex:
    """Return the cache's index type filled with ``size`` random unit vectors.

    Sets FAISS to one OpenMP thread for this process, as the cache service does,
    so that the timed search runs the way the cache runs it.
    """
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((max(size, 1), dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(dimension)
    index.add(range(len(vectors)), vectors)
    return index


def run_speed_phase(
    router_target: str,
    cache_target: str,
    mix: QueryMix,
    template: router_pb2.RouteRequest,
    embedder: Embedder,
    index: VectorIndex,
    iterations: int,
    search_candidates: int,
    on_iteration: Callable[[], None] | None = None,
) -> SpeedSamples:
    """Time each floor part and each Route path, one call at a time, interleaved.

    Each iteration times an empty round trip to the router and to the cache
    (health Check). Then it times three Route calls: a sent question again
    (exact hit), an unsent paraphrase (semantic hit when the cache accepts it)
    and a new question (miss). Last come one embedding of that question and one
    search of ``index`` for ``search_candidates`` neighbours in this process,
    as the cache does. Route calls that take another path than expected are
    counted in ``unexpected`` and not timed as that path.
    """
    speed = SpeedSamples()
    health_request = health_pb2.HealthCheckRequest()
    with (
        grpc.insecure_channel(router_target) as router_channel,
        grpc.insecure_channel(cache_target) as cache_channel,
    ):
        router = router_pb2_grpc.RouterServiceStub(router_channel)
        router_health = health_pb2_grpc.HealthStub(router_channel)
        cache_health = health_pb2_grpc.HealthStub(cache_channel)

        def timed_route(expected: str, text: str | None) -> None:
            if text is None:
                return
            started = time.perf_counter()
            response = router.Route(
                route_request(template, text), timeout=CALL_TIMEOUT_S
            )
            elapsed = _elapsed_ms(started)
            path = PATH_NAMES.get(response.cache_status, "unspecified")
            if path == expected:
                speed.samples[expected].append(elapsed)
            else:
                key = f"{expected} step served as {path}"
                speed.unexpected[key] = speed.unexpected.get(key, 0) + 1

        for _ in range(iterations):
            for name, stub in (
                ("router_round_trip", router_health),
                ("cache_round_trip", cache_health),
            ):
                started = time.perf_counter()
                stub.Check(health_request, timeout=CALL_TIMEOUT_S)
                speed.samples[name].append(_elapsed_ms(started))

            timed_route("exact_hit", mix.sent_question())
            timed_route("semantic_hit", mix.take_paraphrase())
            new_text = mix.new_query()
            timed_route("miss", new_text)

            started = time.perf_counter()
            vector = embedder.embed([new_text])[0]
            speed.samples["embedding"].append(_elapsed_ms(started))
            started = time.perf_counter()
            index.search(vector, search_candidates)
            speed.samples["search"].append(_elapsed_ms(started))
            if on_iteration is not None:
                on_iteration()
    return speed
