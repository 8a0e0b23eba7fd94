"""Tests of binding the router's port: a port in use fails with the address."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import router_service
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


@pytest.fixture
def held_port() -> Iterator[str]:
    """Return the address of a socket that listens until the test ends."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield f"127.0.0.1:{holder.getsockname()[1]}"


async def test_used_metrics_port_fails_with_setting_name(held_port: str) -> None:
    with pytest.raises(
        AddressInUseError,
        match=rf"metrics_address {held_port} is already in use; stop the other "
        "process or set metrics_address to a free port",
    ):
        await create_server(
            settings_for_tests(metrics_address=held_port),
            cache=FakeCache(),
            classifier=FakeClassifier(),
        )


def test_router_process_on_used_metrics_port_exits_cleanly(
    held_port: str, tmp_path: Path
) -> None:
    default = Path(router_service.__file__).parent / "default_config.toml"
    config = tmp_path / "router.toml"
    config.write_text(
        default.read_text(encoding="utf-8").replace(
            'metrics_address = ""', f'metrics_address = "{held_port}"'
        ),
        encoding="utf-8",
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("QUERYGATE_")
    }
    env["QUERYGATE_ROUTER_ADDRESS"] = "127.0.0.1:0"
    result = subprocess.run(
        [sys.executable, "-m", "router_service", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert result.returncode == 1
    assert "startup_failed" in result.stderr
    assert f"metrics_address {held_port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert "never awaited" not in result.stderr
    assert "Event loop is closed" not in result.stderr
