"""Tests of binding the cache's port: a port in use fails with the address."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service.server import create_server
from cache_service.server_port import AddressInUseError, is_address_in_use
from cache_service.testing import FakeEmbedder, settings_for_tests, start_cache_server


def _child_environment(**overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("QUERYGATE_")
    }
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **overrides)
    return env


def test_second_server_on_used_port_fails() -> None:
    embedder = FakeEmbedder()
    with start_cache_server(embedder) as first:
        address = f"127.0.0.1:{first.port}"
        with pytest.raises(
            AddressInUseError,
            match=rf"address {address} is already in use; stop the other process",
        ):
            create_server(settings_for_tests(address=address), embedder)

        # The first server keeps all the traffic.
        with grpc.insecure_channel(first.target) as channel:
            stats = cache_pb2_grpc.CacheServiceStub(channel).Stats(
                cache_pb2.StatsRequest(), timeout=10
            )
        assert stats.entries == 0


def test_cache_process_on_used_port_exits_with_address() -> None:
    with start_cache_server(FakeEmbedder()) as first:
        address = f"127.0.0.1:{first.port}"
        result = subprocess.run(
            [sys.executable, "-m", "cache_service"],
            env=_child_environment(QUERYGATE_CACHE_ADDRESS=address),
            capture_output=True,
            text=True,
            timeout=180,
        )

    assert result.returncode == 1
    assert "startup_failed" in result.stderr
    assert f"address {address} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_address_in_use_only_while_a_socket_listens() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        assert is_address_in_use(address)
    finally:
        listener.close()

    assert not is_address_in_use(address)
    assert not is_address_in_use("127.0.0.1:0")
    assert not is_address_in_use("no-such-host.invalid:50052")


@pytest.fixture
def held_port() -> Iterator[str]:
    """Return the address of a socket that listens until the test ends."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield f"127.0.0.1:{holder.getsockname()[1]}"


def test_used_metrics_port_fails_and_frees_data_dir(
    held_port: str, tmp_path: Path
) -> None:
    settings = settings_for_tests(metrics_address=held_port, data_dir=tmp_path)
    with pytest.raises(
        AddressInUseError,
        match=rf"metrics_address {held_port} is already in use; stop the other "
        "process or set metrics_address to a free port",
    ):
        create_server(settings, FakeEmbedder())

    # The failed start released the data folder's lock.
    with start_cache_server(
        FakeEmbedder(), settings_for_tests(data_dir=tmp_path)
    ) as running:
        assert running.port > 0


def test_cache_process_on_used_metrics_port_exits_cleanly(held_port: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cache_service"],
        env=_child_environment(
            QUERYGATE_CACHE_ADDRESS="127.0.0.1:0",
            QUERYGATE_CACHE_METRICS_ADDRESS=held_port,
        ),
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert result.returncode == 1
    assert "startup_failed" in result.stderr
    assert f"metrics_address {held_port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr
