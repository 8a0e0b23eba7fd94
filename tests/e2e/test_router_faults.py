"""Fault tests of the router: a cache service that crashes and comes back, and a
model server that accepts connections and never responds.

The cache runs as a real ``python -m cache_service`` process. The router runs in
this process on port 0 with the committed classifier.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from e2e_servers import router_settings, start_router
from querygate.router.v1 import router_pb2, router_pb2_grpc
from service_processes import start_cache_process

from cache_service.server import RunningServer as CacheServer
from router_service.testing import model_for_tests

pytestmark = pytest.mark.anyio

WAIT_TIMEOUT_S = 60.0
HANGING_REQUESTS = 20
REQUEST_DEADLINE_S = 2.0


def _request(query: str, tier: int = router_pb2.TIER_SIMPLE) -> router_pb2.RouteRequest:
    return router_pb2.RouteRequest(query=query, tenant="acme", tier=tier)


async def _cache_check(
    stub: router_pb2_grpc.RouterServiceStub,
) -> router_pb2.HealthCheck:
    report = await stub.Health(router_pb2.HealthRequest(), timeout=30)
    return next(check for check in report.checks if check.name == "cache_service")


async def test_router_answers_through_cache_crash_and_reconnects(
    tmp_path: Path, real_classifier: object
) -> None:
    cache = start_cache_process(tmp_path, tmp_path / "data")
    port = cache.port
    router = await start_router(router_settings(cache.target), real_classifier)
    try:
        async with grpc.aio.insecure_channel(router.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            first = await stub.Route(_request("Who wrote Hamlet?"), timeout=30)

            cache.kill()
            while_down = await stub.Route(_request("Who wrote Hamlet?"), timeout=30)
            check_down = await _cache_check(stub)

            # Same port and data folder, as a supervisor restarting it would use.
            cache = start_cache_process(tmp_path, tmp_path / "data", port=port)
            statuses = []
            deadline = time.monotonic() + WAIT_TIMEOUT_S
            while time.monotonic() < deadline:
                reply = await stub.Route(_request("Who wrote Hamlet?"), timeout=30)
                statuses.append(reply.cache_status)
                if reply.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT:
                    break
                await asyncio.sleep(0.2)
            check_up = await _cache_check(stub)
    finally:
        await router.stop(grace_s=1)
        cache.terminate()

    assert first.cache_status == router_pb2.CACHE_STATUS_MISS
    assert while_down.cache_status == router_pb2.CACHE_STATUS_UNAVAILABLE
    assert "simulated" in while_down.answer
    assert check_down.status == router_pb2.CHECK_STATUS_FAILING
    # The stored answer survived the crash, so the reconnected router hits it.
    assert statuses[-1] == router_pb2.CACHE_STATUS_EXACT_HIT
    assert set(statuses[:-1]) <= {router_pb2.CACHE_STATUS_UNAVAILABLE}
    assert check_up.status == router_pb2.CHECK_STATUS_OK


class HangingServer:
    """A TCP server that accepts connections, reads them and never responds.

    ``open_connections`` counts connections that the client has not closed yet.
    """

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.accepted = 0
        self.open_connections = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        self._socket.settimeout(0.2)
        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.accepted += 1
                self.open_connections += 1
            threading.Thread(
                target=self._drain, args=(connection,), daemon=True
            ).start()

    def _drain(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(0.2)
            while not self._stopping.is_set():
                try:
                    if not connection.recv(65536):
                        break
                except TimeoutError:
                    continue
        with self._lock:
            self.open_connections -= 1

    def stop(self) -> None:
        self._stopping.set()
        self._acceptor.join(timeout=5)
        self._socket.close()


@pytest.fixture
def hanging_server() -> Iterator[HangingServer]:
    server = HangingServer()
    yield server
    server.stop()


async def test_hanging_backend_frees_requests_at_deadline(
    cache_server: CacheServer, real_classifier: object, hanging_server: HangingServer
) -> None:
    # The model timeout is far past the deadline, so only the deadline can end
    # the calls within the wait below.
    hanging = model_for_tests(
        "hanging-model",
        backend="openai",
        base_url=f"http://127.0.0.1:{hanging_server.port}/v1",
        model="never-responds",
        timeout_s=120.0,
    )
    models = {
        "hanging-model": hanging,
        "medium-model": model_for_tests("medium-model"),
        "complex-model": model_for_tests("complex-model"),
    }
    settings = router_settings(cache_server.target, models)
    router = await start_router(settings, real_classifier)
    try:
        async with grpc.aio.insecure_channel(router.target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            hung = [
                stub.Route(
                    _request(f"Question {n} for the hanging model"),
                    timeout=REQUEST_DEADLINE_S,
                )
                for n in range(HANGING_REQUESTS)
            ]
            results = asyncio.gather(*hung, return_exceptions=True)
            other = await stub.Route(
                _request("What is 2 + 2?", router_pb2.TIER_MEDIUM), timeout=30
            )
            outcomes = await results
            deadline = time.monotonic() + WAIT_TIMEOUT_S / 2
            while hanging_server.open_connections and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            after = await stub.Route(
                _request("What is 3 + 3?", router_pb2.TIER_MEDIUM), timeout=30
            )
    finally:
        await router.stop(grace_s=1)

    codes = [
        outcome.code() if isinstance(outcome, grpc.aio.AioRpcError) else outcome
        for outcome in outcomes
    ]
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * HANGING_REQUESTS
    assert hanging_server.accepted >= 1
    assert hanging_server.open_connections == 0
    assert other.model == "medium-model"
    assert after.model == "medium-model"
