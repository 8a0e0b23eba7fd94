"""Rate limits shared through a real Redis server by several routers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.domain import RouteQuery
from router_service.errors import RateLimitedError
from router_service.quotas import RequestQuotas
from router_service.settings import LimitSettings

pytestmark = pytest.mark.anyio


async def admitted(quotas: RequestQuotas) -> bool:
    try:
        await quotas.admit(RouteQuery(query="hi", tenant="acme"))
    except RateLimitedError:
        return False
    return True


async def test_two_limiters_share_one_redis_limit(redis_uri: str) -> None:
    settings = LimitSettings(tenant_requests="10/minute", storage_uri=redis_uri)
    first = RequestQuotas(settings, None)
    second = RequestQuotas(settings, None)
    results = await asyncio.gather(
        *(admitted(first if i % 2 else second) for i in range(40))
    )

    assert sum(results) == 10


ROUTER_CONFIG = """
[server]
address = "127.0.0.1:0"
[cache]
target = "127.0.0.1:1"
[limits]
tenant_requests = "5/minute"
storage_uri = "{redis_uri}"
[tiers.simple]
models = ["sim"]
[tiers.medium]
models = ["sim"]
[tiers.complex]
models = ["sim"]
[models.sim]
backend = "simulator"
model = "sim-1"
input_price_per_1k = 0.001
output_price_per_1k = 0.002
context_window = 4096
timeout_s = 5.0
"""


def start_router_process(config: Path, port_file: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "router_service", "--config", str(config)]
    return subprocess.Popen(
        [*command, "--port-file", str(port_file)],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_until_serving(port_file: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 120
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"router did not start:\n{stderr[-2000:]}")
        time.sleep(0.1)
    port = int(port_file.read_text())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        while health.Check(request, timeout=10).status != (
            health_pb2.HealthCheckResponse.SERVING
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("router exited or never became SERVING")
            time.sleep(0.2)
    return port


def count_admitted(port: int, requests: int) -> int:
    passed = 0
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        for index in range(requests):
            request = router_pb2.RouteRequest(query=f"q{index}", tenant="acme")
            try:
                stub.Route(request, timeout=30)
                passed += 1
            except grpc.RpcError as error:
                assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    return passed


def test_two_router_processes_share_limit(redis_uri: str, tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text(ROUTER_CONFIG.format(redis_uri=redis_uri), encoding="utf-8")
    processes = [start_router_process(config, tmp_path / f"port{i}") for i in range(2)]
    try:
        ports = [
            wait_until_serving(tmp_path / f"port{i}", process)
            for i, process in enumerate(processes)
        ]
        passed = count_admitted(ports[0], 4) + count_admitted(ports[1], 4)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    assert passed == 5
