"""Tests of `python -m router_service` and `python -m router_service.client`."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc
from rich.console import Console

from router_service import __main__ as router_main
from router_service import client
from router_service.server import RunningServer, create_server
from router_service.testing import FakeCache, FakeClassifier, settings_for_tests

pytestmark = pytest.mark.anyio

SIMULATOR_CONFIG = """
[server]
address = "127.0.0.1:0"

[cache]
target = "127.0.0.1:{cache_port}"
timeout_s = 0.5

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
output_tokens = 5
"""


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await create_server(
        settings_for_tests(), cache=FakeCache(), classifier=FakeClassifier()
    )
    yield running
    await running.stop(grace_s=0.5)


async def test_client_prints_table(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["What is 2 + 2?", "--target", server.target, "--tenant", "cli-test"]
    exit_code = await asyncio.to_thread(client.main, argv)
    output = capsys.readouterr().out

    assert exit_code == 0
    for label in ("answer", "tier", "model", "cache", "similarity", "tokens", "cost"):
        assert label in output
    assert "simple-model" in output
    assert "miss" in output


async def test_client_table_shows_simulator_answer_verbatim(
    server: RunningServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A wide console keeps the answer on one line.
    monkeypatch.setenv("COLUMNS", "300")
    argv = ["What is 2 + 2?", "--target", server.target, "--tenant", "cli-test"]
    exit_code = await asyncio.to_thread(client.main, argv)
    output = capsys.readouterr().out

    assert exit_code == 0
    # The simulator's answer opens with a bracketed label that markup would drop.
    assert "[simulated answer from simple-model" in output


@pytest.mark.parametrize(
    "answer",
    [
        "Use list[int] here",
        "Close with [/b] tag",
        "[bold red]not styled[/bold red]",
        "See [the docs](https://example.org) for details",
    ],
    ids=["type-hint", "closing-tag", "style-tag", "markdown-link"],
)
def test_client_table_prints_answer_as_plain_text(answer: str) -> None:
    response = router_pb2.RouteResponse(
        answer=answer, model="model[i]", request_id="id[b]"
    )
    buffer = io.StringIO()

    Console(file=buffer, width=200, color_system=None).print(client._table(response))
    output = buffer.getvalue()

    assert answer in output
    assert "model[i]" in output
    assert "id[b]" in output


async def test_client_prints_json(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["What is 2 + 2?", "--target", server.target, "--json"]
    exit_code = await asyncio.to_thread(client.main, argv)
    payload = json.loads(capsys.readouterr().out)

    assert exit_code == 0
    assert payload["model"] == "simple-model"
    assert payload["cacheStatus"] == "CACHE_STATUS_MISS"


async def test_client_reports_invalid_argument(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["   ", "--target", server.target]
    exit_code = await asyncio.to_thread(client.main, argv)
    error = capsys.readouterr().err

    assert exit_code == 1
    assert "INVALID_ARGUMENT" in error
    assert "query" in error


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf", "soon"])
def test_client_rejects_bad_timeout(
    timeout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        client.main(["hello", "--target", "127.0.0.1:1", f"--timeout={timeout}"])
    error = capsys.readouterr().err

    assert exited.value.code == 2
    assert "argument --timeout: must be a number of seconds" in error
    assert "Example: --timeout 30" in error


def test_client_rejects_missing_ca_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.pem"
    argv = ["hello", "--target", "127.0.0.1:1", "--tls-ca-file", str(missing)]

    exit_code = client.main(argv)
    error = capsys.readouterr().err

    assert exit_code == 2
    assert (
        error == f"error: --tls-ca-file must be an existing PEM file; got {missing}.\n"
    )


def test_client_rejects_garbage_ca_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file", encoding="utf-8")
    argv = ["hello", "--target", "127.0.0.1:1", "--tls-ca-file", str(garbage)]

    exit_code = client.main(argv)
    error = capsys.readouterr().err

    assert exit_code == 2
    assert "--tls-ca-file must contain at least one PEM CA certificate" in error
    assert len(error.splitlines()) == 1


@pytest.mark.parametrize(
    "key", ["qg_\u00e9", "qg_a\tb", "qg_\u0662"], ids=["accent", "tab", "arabic-digit"]
)
def test_client_rejects_non_ascii_api_key(
    key: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(client.API_KEY_ENV, key)

    exit_code = client.main(["hello", "--target", "127.0.0.1:1"])
    error = capsys.readouterr().err

    assert exit_code == 2
    assert error.startswith(
        "error: QUERYGATE_API_KEY must contain printable ASCII characters only."
    )
    assert key not in error


def run_router(config: Path, port_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "QUERYGATE_LOG_FORMAT": "json"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router_service",
            "--config",
            str(config),
            "--port-file",
            str(port_file),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_main_rejects_invalid_config(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text(
        SIMULATOR_CONFIG.format(cache_port=1).replace("5.0", "-5.0"), encoding="utf-8"
    )
    process = run_router(config, tmp_path / "port")
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 2
    assert b"models.sim.timeout_s must be greater than 0" in stderr


def test_main_rejects_garbage_certificate(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file", encoding="utf-8")
    config = tmp_path / "router.toml"
    config.write_text(
        SIMULATOR_CONFIG.format(cache_port=1)
        + f"\n[security]\ntls_cert_file = '{garbage}'\ntls_key_file = '{garbage}'\n",
        encoding="utf-8",
    )
    process = run_router(config, tmp_path / "port")
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 2
    assert b"security.tls_cert_file must contain a PEM certificate" in stderr
    assert b"Failed to bind" not in stderr


def test_main_rejects_missing_classifier_artifact(tmp_path: Path) -> None:
    empty = tmp_path / "no-artifact"
    empty.mkdir()
    config = tmp_path / "router.toml"
    config.write_text(
        SIMULATOR_CONFIG.format(cache_port=1)
        + f"\n[classifier]\nartifact_dir = '{empty}'\n",
        encoding="utf-8",
    )
    process = run_router(config, tmp_path / "port")
    _, stderr = process.communicate(timeout=60)
    lines = [json.loads(line) for line in stderr.decode().splitlines()]
    failures = [line for line in lines if line["event"] == "startup_failed"]

    assert process.returncode == 1
    assert len(failures) == 1
    assert f"classifier.artifact_dir {empty} has no usable" in failures[0]["error"]
    assert "make train" in failures[0]["error"]
    assert "server_started" not in [line["event"] for line in lines]
    assert "Traceback" not in stderr.decode()
    assert not (tmp_path / "port").exists()


def wait_for_port(path: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text())
        if process.poll() is not None:
            raise AssertionError(
                process.stderr.read().decode() if process.stderr else ""
            )
        time.sleep(0.1)
    raise AssertionError("router did not write its port file")


def test_main_serves_until_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text(SIMULATOR_CONFIG.format(cache_port=1), encoding="utf-8")
    port_file = tmp_path / "port"
    process = run_router(config, port_file)
    try:
        port = wait_for_port(port_file, process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            status = health.Check(request, timeout=10).status
            while status != health_pb2.HealthCheckResponse.SERVING:
                assert process.poll() is None, "router exited while loading"
                time.sleep(0.2)
                status = health.Check(request, timeout=10).status
            stub = router_pb2_grpc.RouterServiceStub(channel)
            response = stub.Route(
                router_pb2.RouteRequest(query="What is DNS?", tenant="acme"), timeout=30
            )
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert response.cache_status == router_pb2.CACHE_STATUS_UNAVAILABLE
    assert "simulated" in response.answer
    assert process.returncode == 0
    events = [json.loads(line)["event"] for line in stderr.decode().splitlines()]
    assert "server_started" in events
    assert "rpc_completed" in events
    assert "server_stopped" in events


def test_main_help_lists_backup_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        router_main.main(["--help"])
    output = capsys.readouterr().out

    assert exited.value.code == 0
    assert "python -m router_service snapshot [--output-dir DIR]" in output
    assert "python -m router_service restore SNAPSHOT [--force]" in output
