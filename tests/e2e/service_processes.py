"""Helpers of the crash and fault tests: the cache service as a real child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Generous, because the model loads slowly while other tests share the CPU.
START_TIMEOUT_S = 180.0


def child_environment(**overrides: str) -> dict[str, str]:
    """Return this process's environment without QUERYGATE_ settings, plus overrides."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("QUERYGATE_")
    }
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **overrides)
    return env


@dataclass
class CacheProcess:
    """A ``python -m cache_service`` child process and the port it bound."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def target(self) -> str:
        """Address to dial."""
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """End the process with SIGKILL, as a crash would."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self) -> None:
        """Stop the process with SIGTERM and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


def start_cache_process(
    work_dir: Path,
    data_dir: Path,
    *,
    port: int = 0,
    settings: Mapping[str, str] | None = None,
) -> CacheProcess:
    """Start the cache service on ``port`` (0 picks one) and wait for SERVING.

    ``settings`` maps QUERYGATE_CACHE_ environment variables to values.
    """
    port_file = work_dir / f"cache-{time.monotonic_ns()}.port"
    env = child_environment(
        QUERYGATE_CACHE_ADDRESS=f"127.0.0.1:{port}",
        QUERYGATE_CACHE_DATA_DIR=str(data_dir),
        QUERYGATE_CACHE_BACKUP_DIR=str(work_dir / "backups"),
        **(settings or {}),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "cache_service", "--port-file", str(port_file)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    running = CacheProcess(process, _wait_for_port(port_file, process))
    try:
        wait_until_serving(running.target, process)
    except BaseException:
        running.kill()
        raise
    return running


def _wait_for_port(path: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text.isdigit():
            return int(text)
        if process.poll() is not None:
            raise AssertionError(f"cache service exited with {process.returncode}")
        time.sleep(0.1)
    raise AssertionError(f"no port file after {START_TIMEOUT_S} s")


def wait_until_serving(
    target: str, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll grpc.health.v1 at ``target`` until it reports SERVING."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise AssertionError(f"cache service exited with {process.returncode}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"{target} not SERVING after {START_TIMEOUT_S} s")
