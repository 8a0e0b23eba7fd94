"""Tests of binding the router's port: a port in use fails with the address."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cache_service.server_port import AddressInUseError
from router_service.server import create_server
from router_service.testing import FakeCache, FakeClassifier, settings_for_tests

pytestmark = pytest.mark.anyio


async def test_second_router_on_used_port_fails() -> None:
    first = await create_server(
        settings_for_tests(), cache=FakeCache(), classifier=FakeClassifier()
    )
    try:
        address = f"127.0.0.1:{first.port}"
        with pytest.raises(
            AddressInUseError,
            match=rf"address {address} is already in use; stop the other process",
        ):
            await create_server(
                settings_for_tests(address=address),
                cache=FakeCache(),
                classifier=FakeClassifier(),
            )

        # The first router keeps all the traffic.
        async with grpc.aio.insecure_channel(first.target) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await first.stop(grace_s=0.5)


async def test_router_process_on_used_port_exits_with_address() -> None:
    first = await create_server(
        settings_for_tests(), cache=FakeCache(), classifier=FakeClassifier()
    )
    address = f"127.0.0.1:{first.port}"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("QUERYGATE_")
    }
    env["QUERYGATE_ROUTER_ADDRESS"] = address
    try:
        # A blocking call is fine here: the first router only has to hold its port.
        result = subprocess.run(
            [sys.executable, "-m", "router_service"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        await first.stop(grace_s=0.5)

    assert result.returncode == 1
    assert "startup_failed" in result.stderr
    assert f"address {address} is already in use" in result.stderr
    assert "Traceback" not in result.stderr
