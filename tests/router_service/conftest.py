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


REDIS_SERVER = Path("/usr/bin/redis-server")
REDIS_START_TIMEOUT_S = 30.0
REDIS_START_ATTEMPTS = 3


def _free_port() -> int:
    # redis-server cannot report a port it picked, so the test picks one.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start redis-server on a free port; return it and the port once PING works.

    Another process may take the chosen port before Redis binds it, so a server
    that exits at start-up is retried on a new port.

    Raises:
        RuntimeError: every attempt failed; the message contains the server log.
    """
    log = directory / "redis.log"
    for _ in range(REDIS_START_ATTEMPTS):
        port = _free_port()
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    str(REDIS_SERVER),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(directory),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        if _wait_for_ping(process, port):
            return process, port
        process.kill()
        process.wait()
    raise RuntimeError(
        f"redis-server failed to start in {REDIS_START_ATTEMPTS} attempts; last log:\n"
        + log.read_text(errors="replace")[-2000:]
    )


def _wait_for_ping(process: subprocess.Popen[bytes], port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    try:
        while process.poll() is None and time.monotonic() < deadline:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                time.sleep(0.05)
        return False
    finally:
        client.close()


@pytest.fixture
def redis_uri(tmp_path: Path) -> Iterator[str]:
    """Start a real Redis server from the Debian package on 127.0.0.1.

    Fails, never skips, when the binary is missing.
    """
    if not REDIS_SERVER.is_file():
        pytest.fail(
            f"{REDIS_SERVER} not found: the shared rate-limit tests need a real "
            "Redis server. Install the Debian package with "
            "`apt-get install -y redis-server` and rerun."
        )
    process, port = _start_redis(tmp_path)
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
