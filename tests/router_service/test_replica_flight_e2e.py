"""Single-flight across two real routers sharing a real Redis and a real cache.

The model is an OpenAI-compatible HTTP server that delays every call until the
test opens its gate, so the test decides when the leader's call returns
instead of relying on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
import redis.asyncio
from fake_openai_server import completion_body
from querygate.router.v1 import router_pb2, router_pb2_grpc

from cache_service.embedding import SentenceTransformerEmbedder
from cache_service.server import RunningServer as CacheServer
from cache_service.testing import start_cache_server
from router_service.replica_flight import KEY_PREFIX
from router_service.server import RunningServer, create_server
from router_service.settings import CacheSettings, RouterSettings
from router_service.testing import FakeClassifier, model_for_tests, settings_for_tests

pytestmark = pytest.mark.anyio

QUESTION = "What is the tallest mountain in Africa?"
ANSWER = "Kilimanjaro."
REQUESTS_PER_ROUTER = 6
GATE_TIMEOUT_S = 60.0
CONDITION_TIMEOUT_S = 60.0
RPC_TIMEOUT_S = 90.0


@dataclass
class GatedModel:
    """Records chat completion calls and delays each until `gate` is set."""

    gate: threading.Event = field(default_factory=threading.Event)
    # HTTP status of each call in order; later calls get 200.
    statuses: list[int] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def next_status(self, body: dict[str, Any]) -> int:
        with self.lock:
            self.calls.append(body)
            index = len(self.calls) - 1
        return self.statuses[index] if index < len(self.statuses) else 200


def _gated_handler(model: GatedModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            status = model.next_status(json.loads(self.rfile.read(length) or b"{}"))
            model.gate.wait(GATE_TIMEOUT_S)
            body = completion_body(ANSWER) if status == 200 else {"error": "bad"}
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            # A router that stopped before the gate opened has closed the socket.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

    return Handler


@pytest.fixture
def gated_model() -> Iterator[GatedModel]:
    model = GatedModel()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _gated_handler(model))
    server.daemon_threads = True
    model.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield model
    model.gate.set()
    server.shutdown()


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder.load()


@pytest.fixture
def cache_server(embedder: SentenceTransformerEmbedder) -> Iterator[CacheServer]:
    with start_cache_server(embedder) as running:
        yield running


def replica_settings(
    cache_target: str, model: GatedModel, redis_uri: str
) -> RouterSettings:
    remote = model_for_tests(
        "remote", backend="openai", base_url=model.base_url, timeout_s=60.0
    )
    # Every tier names the same model, so a failed call has no fallback.
    tiers = {tier: ("remote",) for tier in ("simple", "medium", "complex")}
    return replace(
        settings_for_tests(models={"remote": remote}, tiers=tiers),
        cache=CacheSettings(
            target=cache_target,
            timeout_s=10.0,
            single_flight_wait_s=60.0,
            single_flight_redis_uri=redis_uri,
        ),
    )


@dataclass
class Replicas:
    """Two routers that share one cache and one Redis server."""

    stubs: list[router_pb2_grpc.RouterServiceStub]
    servers: list[RunningServer]


@asynccontextmanager
async def running_replicas(settings: RouterSettings) -> AsyncIterator[Replicas]:
    servers = [
        await create_server(settings, classifier=FakeClassifier()) for _ in range(2)
    ]
    channels = [grpc.aio.insecure_channel(s.target) for s in servers]
    yield Replicas([router_pb2_grpc.RouterServiceStub(c) for c in channels], servers)
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.stop(grace_s=1)


@pytest.fixture
async def replicas(
    cache_server: CacheServer, gated_model: GatedModel, redis_uri: str
) -> AsyncIterator[Replicas]:
    settings = replica_settings(cache_server.target, gated_model, redis_uri)
    async with running_replicas(settings) as running:
        yield running


async def eventually(
    condition: Callable[[], Awaitable[bool]], description: str
) -> None:
    """Wait until `condition()` is true. Fail with `description` after a long wait."""
    deadline = time.monotonic() + CONDITION_TIMEOUT_S
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {description}")
        await asyncio.sleep(0.02)


def route(
    stub: router_pb2_grpc.RouterServiceStub, tenant: str = "acme"
) -> asyncio.Task[router_pb2.RouteResponse]:
    request = router_pb2.RouteRequest(query=QUESTION, tenant=tenant)
    return asyncio.ensure_future(stub.Route(request, timeout=RPC_TIMEOUT_S))


async def model_calls_reach(model: GatedModel, count: int) -> None:
    async def reached() -> bool:
        return len(model.calls) >= count

    await eventually(reached, f"the model has received {count} call(s)")


async def lookups_finish(cache_server: CacheServer, count: int) -> None:
    """Wait until the cache has completed `count` lookups, so none is still running."""

    async def finished() -> bool:
        value = cache_server.metrics.registry.get_sample_value(
            "querygate_cache_rpcs_total", {"method": "Lookup", "code": "OK"}
        )
        return (value or 0) >= count

    await eventually(finished, f"the cache has completed {count} lookups")


async def follower_subscribes(redis_uri: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_uri, decode_responses=True)

    async def subscribed() -> bool:
        channels = await client.pubsub_channels(f"{KEY_PREFIX}:*")
        return len(channels) > 0

    try:
        await eventually(subscribed, "the other router waits on the flight channel")
    finally:
        await client.aclose()


async def test_replicas_share_one_model_call(
    replicas: Replicas, gated_model: GatedModel, redis_uri: str
) -> None:
    first = route(replicas.stubs[0])
    await model_calls_reach(gated_model, 1)
    others = [
        route(stub) for stub in replicas.stubs for _ in range(REQUESTS_PER_ROUTER)
    ]
    await follower_subscribes(redis_uri)

    gated_model.gate.set()
    responses = await asyncio.gather(first, *others)

    second_router = [r.cache_status for r in responses[1 + REQUESTS_PER_ROUTER :]]
    assert len(gated_model.calls) == 1
    assert [r.answer for r in responses] == [ANSWER] * len(responses)
    assert responses[0].cache_status == router_pb2.CACHE_STATUS_MISS
    assert router_pb2.CACHE_STATUS_SHARED in second_router
    assert set(second_router) <= {
        router_pb2.CACHE_STATUS_SHARED,
        router_pb2.CACHE_STATUS_EXACT_HIT,
    }


async def test_shared_answer_names_leaders_entry(
    replicas: Replicas, gated_model: GatedModel, redis_uri: str
) -> None:
    leader = route(replicas.stubs[0])
    await model_calls_reach(gated_model, 1)
    follower = route(replicas.stubs[1])
    await follower_subscribes(redis_uri)

    gated_model.gate.set()
    led, shared = await asyncio.gather(leader, follower)

    assert shared.cache_status == router_pb2.CACHE_STATUS_SHARED
    assert shared.cache_entry_id == led.cache_entry_id
    assert shared.cost_usd == 0.0
    assert led.cost_usd > 0.0


async def test_failed_leader_hands_call_to_other_router(
    replicas: Replicas, gated_model: GatedModel, redis_uri: str
) -> None:
    # 400 is never retried and the chain has no other model, so the leader fails.
    gated_model.statuses = [400]
    leader = route(replicas.stubs[0])
    await model_calls_reach(gated_model, 1)
    followers = [route(replicas.stubs[1]) for _ in range(REQUESTS_PER_ROUTER)]
    await follower_subscribes(redis_uri)

    gated_model.gate.set()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await leader
    responses = await asyncio.gather(*followers)

    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert [r.answer for r in responses] == [ANSWER] * REQUESTS_PER_ROUTER
    assert len(gated_model.calls) == 2


async def test_different_tenants_never_share(
    replicas: Replicas, gated_model: GatedModel
) -> None:
    acme = route(replicas.stubs[0], tenant="acme")
    globex = route(replicas.stubs[1], tenant="globex")
    # Both calls reach the model while the gate is closed, so neither waited.
    await model_calls_reach(gated_model, 2)

    gated_model.gate.set()
    responses = await asyncio.gather(acme, globex)

    assert [r.cache_status for r in responses] == [router_pb2.CACHE_STATUS_MISS] * 2
    assert len(gated_model.calls) == 2


async def test_redis_stopped_mid_flight_still_answers(
    replicas: Replicas,
    cache_server: CacheServer,
    gated_model: GatedModel,
    redis_uri: str,
) -> None:
    leader = route(replicas.stubs[0])
    await model_calls_reach(gated_model, 1)
    followers = [route(replicas.stubs[1]) for _ in range(REQUESTS_PER_ROUTER)]
    await follower_subscribes(redis_uri)

    client = redis.asyncio.Redis.from_url(redis_uri)
    with contextlib.suppress(redis.ConnectionError):
        await client.shutdown(nosave=True)
    with pytest.raises(redis.ConnectionError):
        await client.ping()
    await client.aclose()
    # The waiting router stops waiting and calls the model itself.
    await model_calls_reach(gated_model, 2)
    await lookups_finish(cache_server, 1 + REQUESTS_PER_ROUTER)
    gated_model.gate.set()
    responses = await asyncio.gather(leader, *followers)

    assert [r.answer for r in responses] == [ANSWER] * (1 + REQUESTS_PER_ROUTER)
    assert len(gated_model.calls) == 2


async def test_unreachable_redis_leaves_each_router_alone(
    cache_server: CacheServer, gated_model: GatedModel, unused_redis_uri: str
) -> None:
    settings = replica_settings(cache_server.target, gated_model, unused_redis_uri)
    async with running_replicas(settings) as replicas:
        requests = [
            route(stub) for stub in replicas.stubs for _ in range(REQUESTS_PER_ROUTER)
        ]
        # Each router makes its own call; its other requests share it in-process.
        await model_calls_reach(gated_model, 2)
        await lookups_finish(cache_server, len(requests))
        gated_model.gate.set()
        responses = await asyncio.gather(*requests)

        assert [r.answer for r in responses] == [ANSWER] * len(responses)
        assert len(gated_model.calls) == 2


@pytest.fixture
def unused_redis_uri() -> str:
    """A redis:// URI on a 127.0.0.1 port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{sock.getsockname()[1]}"
