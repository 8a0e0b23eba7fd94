"""Tests of ``python -m cache_service`` as a process: port file, health, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc

from cache_service import __main__ as cache_main

START_TIMEOUT_S = 120.0


def _environment(**overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("QUERYGATE_")
    }
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **overrides)
    return env


def _wait_for_port(path: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text())
        assert process.poll() is None, "cache service exited before binding"
        time.sleep(0.1)
    raise AssertionError(f"no port file after {START_TIMEOUT_S} s")


def _wait_until_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        status = health.Check(health_pb2.HealthCheckRequest()).status
        if status == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.2)
    raise AssertionError(f"not SERVING after {START_TIMEOUT_S} s")


def test_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "cache.port"
    process = subprocess.Popen(
        [sys.executable, "-m", "cache_service", "--port-file", str(port_file)],
        env=_environment(
            QUERYGATE_CACHE_ADDRESS="127.0.0.1:0",
            QUERYGATE_CACHE_DATA_DIR=str(tmp_path / "data"),
            QUERYGATE_LOG_FORMAT="json",
        ),
        stderr=subprocess.PIPE,
    )
    try:
        port = _wait_for_port(port_file, process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            _wait_until_serving(channel)
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            scope = cache_pb2.Scope(tenant="acme")
            stored = stub.Store(
                cache_pb2.StoreRequest(
                    query="Who wrote Hamlet?",
                    scope=scope,
                    answer="Shakespeare",
                    finish_reason="stop",
                )
            )
            found = stub.Lookup(
                cache_pb2.LookupRequest(
                    query="Who is the author of Hamlet?", scope=scope
                )
            )
        assert stored.stored
        assert found.answer == "Shakespeare"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)

    log = stderr.decode()
    assert process.returncode == 0, log[-2000:]
    assert '"event": "server_started"' in log
    assert '"event": "rpc_completed"' in log
    assert '"event": "server_stopped"' in log
    # Prompts and answers never reach the log.
    assert "Hamlet" not in log
    assert "Shakespeare" not in log


def _start_service(
    port_file: Path, data_dir: Path
) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "cache_service", "--port-file", str(port_file)],
        env=_environment(
            QUERYGATE_CACHE_ADDRESS="127.0.0.1:0",
            QUERYGATE_CACHE_DATA_DIR=str(data_dir),
        ),
        stderr=subprocess.DEVNULL,
    )
    return process, _wait_for_port(port_file, process)


def test_acknowledged_stores_survive_kill_9(tmp_path: Path) -> None:
    scope = cache_pb2.Scope(tenant="acme", model="auto")
    questions = [f"What is the population of city number {n}?" for n in range(20)]
    process, port = _start_service(tmp_path / "first.port", tmp_path / "data")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            _wait_until_serving(channel)
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            entry_ids = []
            for number, question in enumerate(questions):
                response = stub.Store(
                    cache_pb2.StoreRequest(
                        query=question,
                        scope=scope,
                        answer=f"answer {number}",
                        finish_reason="stop",
                    )
                )
                assert response.stored
                entry_ids.append(response.entry_id)
            before = stub.Stats(cache_pb2.StatsRequest())
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    process, port = _start_service(tmp_path / "second.port", tmp_path / "data")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            _wait_until_serving(channel)
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            after = stub.Stats(cache_pb2.StatsRequest())
            found = [
                stub.Lookup(cache_pb2.LookupRequest(query=question, scope=scope))
                for question in questions
            ]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

    assert after.entries == before.entries == len(questions)
    assert after.index_vectors == before.index_vectors
    assert [response.entry_id for response in found] == entry_ids
    assert [response.answer for response in found] == [
        f"answer {number}" for number in range(len(questions))
    ]


def test_invalid_setting_exits_with_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cache_service"],
        env=_environment(
            QUERYGATE_CACHE_MIN_COSINE_SIMILARITY="1.5",
            QUERYGATE_CACHE_DATA_DIR=str(tmp_path / "data"),
        ),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"min_cosine_similarity must be in (0, 1]; got 1.5" in result.stderr


def test_garbage_certificate_exits_with_settings_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a PEM file")
    result = subprocess.run(
        [sys.executable, "-m", "cache_service"],
        env=_environment(
            QUERYGATE_CACHE_ADDRESS="127.0.0.1:0",
            QUERYGATE_CACHE_DATA_DIR=str(tmp_path / "data"),
            QUERYGATE_CACHE_TLS_CERT_FILE=str(garbage),
            QUERYGATE_CACHE_TLS_KEY_FILE=str(garbage),
        ),
        capture_output=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert b"tls_cert_file must contain a PEM certificate" in result.stderr
    assert b"Failed to bind" not in result.stderr


def test_json_log_lines_are_all_json(tmp_path: Path) -> None:
    port_file = tmp_path / "cache.port"
    process = subprocess.Popen(
        [sys.executable, "-m", "cache_service", "--port-file", str(port_file)],
        env=_environment(
            QUERYGATE_CACHE_ADDRESS="127.0.0.1:0",
            QUERYGATE_CACHE_DATA_DIR=str(tmp_path / "data"),
            QUERYGATE_LOG_FORMAT="json",
        ),
        stderr=subprocess.PIPE,
    )
    try:
        port = _wait_for_port(port_file, process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            _wait_until_serving(channel)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)

    lines = stderr.decode().splitlines()
    assert lines
    for line in lines:
        record = json.loads(line)
        assert "event" in record, line


def test_help_lists_backup_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cache_main.main(["--help"])
    output = capsys.readouterr().out

    assert exited.value.code == 0
    assert "python -m cache_service snapshot [--output-dir DIR]" in output
    assert "python -m cache_service restore SNAPSHOT [--force]" in output
    assert "--port-file" in output
