"""Tests of the local stack launcher: real child processes, real gRPC, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.local_stack import (
    LocalStack,
    StackOptions,
    StackStartError,
    parse_args,
)
from router_service.local_stack_config import default_router_config, write_router_config

REPO = Path(__file__).resolve().parent.parent
# Bounded waits for processes, not timing assertions: generous for a busy machine.
STACK_READY_TIMEOUT_S = 300.0
CHILD_EXIT_TIMEOUT_S = 60.0


def _simulator_options(run_dir: Path, **overrides: object) -> StackOptions:
    values: dict[str, object] = {
        "backend": "simulator",
        "router_port": 0,
        "cache_port": 0,
        "llama_port": 0,
        "run_dir": run_dir,
        "startup_timeout_s": STACK_READY_TIMEOUT_S,
    }
    values.update(overrides)
    return StackOptions(**values)  # type: ignore[arg-type]


def _route(address: str, query: str) -> router_pb2.RouteResponse:
    with grpc.insecure_channel(address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        request = router_pb2.RouteRequest(query=query, tenant="stack-test")
        response: router_pb2.RouteResponse = stub.Route(request, timeout=120)
        return response


def _is_running(pid: int) -> bool:
    """Return whether pid is a live process; a zombie counts as ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state letter follows the command name, which is in parentheses.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_until_ended(pids: list[int]) -> list[int]:
    """Wait up to CHILD_EXIT_TIMEOUT_S for pids to end; return those still running."""
    deadline = time.monotonic() + CHILD_EXIT_TIMEOUT_S
    while time.monotonic() < deadline:
        running = [pid for pid in pids if _is_running(pid)]
        if not running:
            return []
        time.sleep(0.2)
    return [pid for pid in pids if _is_running(pid)]


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict]]:
    """Run `python -m router_service.local_stack --backend simulator` until ready.

    Yields the launcher process and the state it wrote to stack.json.
    """
    state_file = tmp_path / "stack.json"
    command = [
        sys.executable,
        "-m",
        "router_service.local_stack",
        "--backend",
        "simulator",
        "--router-port",
        "0",
        "--cache-port",
        "0",
        "--run-dir",
        str(tmp_path),
    ]
    with (tmp_path / "launcher.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log)
    deadline = time.monotonic() + STACK_READY_TIMEOUT_S
    while not state_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(
                "launcher did not get ready:\n"
                + (tmp_path / "launcher.log").read_text()
            )
        time.sleep(0.2)
    state = json.loads(state_file.read_text())
    yield process, state
    if process.poll() is None:
        process.kill()
        process.wait()
    _wait_until_ended([child["pid"] for child in state["children"].values()])


def test_simulator_stack_answers_route(tmp_path: Path) -> None:
    with LocalStack(_simulator_options(tmp_path)) as stack:
        first = _route(stack.router_address, "What is the capital of France?")
        second = _route(stack.router_address, "What is the capital of France?")
        names = [child.name for child in stack.children]

    assert names == ["cache", "router"]
    assert first.answer
    assert first.cache_status == router_pb2.CACHE_STATUS_MISS
    assert second.cache_status == router_pb2.CACHE_STATUS_EXACT_HIT
    assert second.answer == first.answer


def test_stack_snapshots_go_under_run_dir(tmp_path: Path) -> None:
    with LocalStack(_simulator_options(tmp_path)) as stack:
        _route(stack.router_address, "What is the capital of France?")
        with grpc.insecure_channel(stack.cache_address) as channel:
            cache = cache_pb2_grpc.CacheServiceStub(channel)
            cache_snapshot = cache.Snapshot(cache_pb2.SnapshotRequest(), timeout=60)
        with grpc.insecure_channel(stack.router_address) as channel:
            router = router_pb2_grpc.RouterServiceStub(channel)
            router_snapshot = router.Snapshot(router_pb2.SnapshotRequest(), timeout=60)

    cache_file = Path(cache_snapshot.path)
    router_file = Path(router_snapshot.path)
    assert cache_file.parent == tmp_path / "backups" / "cache"
    assert cache_file.is_file()
    assert cache_snapshot.entries == 1
    assert router_file.parent == tmp_path / "backups" / "router"
    assert router_file.is_file()
    assert router_snapshot.requests == 1


def test_stack_stop_ends_every_child(tmp_path: Path) -> None:
    stack = LocalStack(_simulator_options(tmp_path))
    stack.start()
    pids = [child.pid for child in stack.children]
    stack.stop()

    assert stack.children == []
    assert [pid for pid in pids if _is_running(pid)] == []


def test_sigterm_to_launcher_stops_children(
    launcher: tuple[subprocess.Popen[bytes], dict],
) -> None:
    process, state = launcher
    pids = [child["pid"] for child in state["children"].values()]
    assert len(pids) == 2
    assert all(_is_running(pid) for pid in pids)

    process.send_signal(signal.SIGTERM)
    exit_code = process.wait(timeout=CHILD_EXIT_TIMEOUT_S)

    assert exit_code == 0
    assert [pid for pid in pids if _is_running(pid)] == []


def test_killed_launcher_leaves_no_orphans(
    launcher: tuple[subprocess.Popen[bytes], dict],
) -> None:
    process, state = launcher
    pids = [child["pid"] for child in state["children"].values()]

    # SIGKILL gives the launcher no chance to clean up: the kernel's parent-death
    # signal must stop the children.
    process.kill()
    process.wait()

    assert _wait_until_ended(pids) == []


def test_router_failure_names_router_and_shows_log(tmp_path: Path) -> None:
    config = tmp_path / "bad_router.toml"
    text = default_router_config().read_text()
    config.write_text(text.replace('models = ["local-simple"]', 'models = ["nope"]'))
    stack = LocalStack(_simulator_options(tmp_path / "run", router_config=config))

    with pytest.raises(
        StackStartError, match=r"^router \(pid \d+\) did not start"
    ) as info:
        stack.start()

    assert "last lines of" in str(info.value)
    assert "nope" in str(info.value)
    assert stack.children == []


def test_busy_port_is_rejected_with_option_name(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy_port = sock.getsockname()[1]
        stack = LocalStack(_simulator_options(tmp_path, cache_port=busy_port))

        with pytest.raises(StackStartError, match=f"port {busy_port} .*--cache-port"):
            stack.start()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("backend", "gpu", "backend must be one of local, simulator; got 'gpu'"),
        ("router_port", 70000, "router_port must be between 0 and 65535"),
        ("llama_threads", 0, "llama_threads must be at least 1; got 0"),
        ("startup_timeout_s", 0.0, "startup_timeout_s must be positive"),
        ("router_config", Path("/nonexistent.toml"), "is not a file"),
    ],
)
def test_options_reject_invalid_values(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _simulator_options(tmp_path, **{field: value})


def test_derived_config_simulates_every_model(tmp_path: Path) -> None:
    target = write_router_config(
        source=default_router_config(),
        target=tmp_path / "router.toml",
        cache_target="127.0.0.1:6000",
        llama_base_url=None,
        simulate=True,
    )
    config = tomllib.loads(target.read_text())

    assert config["cache"]["target"] == "127.0.0.1:6000"
    assert "backup_dir" not in config.get("ledger", {})
    assert config["models"]
    for model in config["models"].values():
        assert model["backend"] == "simulator"


def test_derived_config_points_models_at_llama_port(tmp_path: Path) -> None:
    source = tmp_path / "source.toml"
    source.write_text(
        "# kept comment\n"
        "[models.local]\n"
        'backend = "openai"\n'
        'base_url = "http://127.0.0.1:8081/v1"\n'
        "[models.hosted]\n"
        'backend = "openai"\n'
        'base_url = "https://api.example.com/v1"\n'
    )
    target = write_router_config(
        source=source,
        target=tmp_path / "router.toml",
        cache_target="127.0.0.1:6000",
        llama_base_url="http://127.0.0.1:9999/v1",
        simulate=False,
    )
    text = target.read_text()
    config = tomllib.loads(text)

    assert config["models"]["local"]["base_url"] == "http://127.0.0.1:9999/v1"
    assert config["models"]["hosted"]["base_url"] == "https://api.example.com/v1"
    assert config["models"]["local"]["backend"] == "openai"
    assert "# kept comment" in text


@pytest.mark.llama
def test_real_stack_starts_and_answers(tmp_path: Path) -> None:
    options = StackOptions(
        backend="local",
        router_port=0,
        cache_port=0,
        llama_port=0,
        run_dir=tmp_path,
        startup_timeout_s=STACK_READY_TIMEOUT_S,
    )
    with LocalStack(options) as stack:
        names = [child.name for child in stack.children]
        response = _route(stack.router_address, "Name a primary colour.")
        pids = [child.pid for child in stack.children]

    assert names == ["llama", "cache", "router"]
    assert stack.llama_base_url is not None
    assert response.answer
    assert response.cache_status == router_pb2.CACHE_STATUS_MISS
    assert response.usage.output_tokens > 0
    assert [pid for pid in pids if _is_running(pid)] == []
    assert os.path.exists(tmp_path / "logs" / "llama.log")


def test_help_describes_every_port_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--help"])
    output = " ".join(capsys.readouterr().out.split())

    assert exited.value.code == 0
    assert "port of the router's gRPC API; 0 picks a free port (default: 50051)" in (
        output
    )
    assert "port of the cache service's gRPC API; 0 picks a free port" in output
    assert "port of the llama.cpp server's HTTP API (--backend local only)" in output
