"""Readiness probes for the local stack's child processes.

Each probe polls until its condition holds, and raises ChildProcessError when the
child exits first or TimeoutError when the deadline (a `time.monotonic()` value)
passes first.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from router_service.child_process import ChildProcess

POLL_INTERVAL_S = 0.2
_PROBE_TIMEOUT_S = 2.0


def _check_alive(child: ChildProcess, waiting_for: str) -> None:
    if child.exit_code is not None:
        raise ChildProcessError(
            f"exited with code {child.exit_code} while waiting for {waiting_for}"
        )


def _sleep_or_time_out(deadline: float, waiting_for: str, last_seen: str) -> None:
    if time.monotonic() >= deadline:
        raise TimeoutError(
            f"timed out waiting for {waiting_for} (last seen: {last_seen})"
        )
    time.sleep(POLL_INTERVAL_S)


def wait_for_port_file(path: Path, child: ChildProcess, deadline: float) -> int:
    """Wait until the child writes its bound port to path, and return the port."""
    waiting_for = f"its port in {path}"
    last_seen = "no file"
    while True:
        _check_alive(child, waiting_for)
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = None
        if text:
            # The writer may not have finished the file yet, so retry until it parses.
            if text.isdigit() and 0 < int(text) <= 65535:
                return int(text)
            last_seen = f"file content {text[:20]!r}"
        _sleep_or_time_out(deadline, waiting_for, last_seen)


def wait_for_http_ok(url: str, child: ChildProcess, deadline: float) -> None:
    """Wait until GET url returns HTTP 200."""
    waiting_for = f"HTTP 200 from {url}"
    last_seen = "no connection"
    while True:
        _check_alive(child, waiting_for)
        try:
            response = httpx.get(url, timeout=_PROBE_TIMEOUT_S)
            if response.status_code == httpx.codes.OK:
                return
            last_seen = f"HTTP {response.status_code}"
        except httpx.TransportError as error:
            last_seen = type(error).__name__
        _sleep_or_time_out(deadline, waiting_for, last_seen)


def wait_for_grpc_serving(address: str, child: ChildProcess, deadline: float) -> None:
    """Wait until the gRPC health service at address reports SERVING.

    Checks the server's overall health (service name ""), which both services set
    to SERVING only once their models are loaded.
    """
    waiting_for = f"SERVING from grpc.health.v1 at {address}"
    last_seen = "no connection"
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            _check_alive(child, waiting_for)
            try:
                reply = health.Check(
                    health_pb2.HealthCheckRequest(service=""),
                    timeout=_PROBE_TIMEOUT_S,
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_seen = health_pb2.HealthCheckResponse.ServingStatus.Name(
                    reply.status
                )
            except grpc.RpcError as error:
                last_seen = error.code().name  # type: ignore[attr-defined]
            _sleep_or_time_out(deadline, waiting_for, last_seen)
