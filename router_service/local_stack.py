"""Run the local model, the cache service and the router together for development.

`python -m router_service.local_stack` (what `make run` calls) starts the llama.cpp
server on the SmolLM2 GGUF file, `python -m cache_service` and `python -m
router_service` as child processes, waits until all three are ready and stops them
all on Ctrl-C or SIGTERM. `LocalStack` offers the same to the replay and the tests.
Logs, port files, cache data, the cost ledger, the snapshots of both and the derived
router config go under the run directory (default .run/, which git ignores).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import TypeVar

from router_service.child_process import ChildProcess, spawn, stop_all
from router_service.local_stack_config import (
    BACKENDS,
    LLAMA_MODEL_ALIAS,
    default_router_config,
    smollm2_gguf_path,
    write_router_config,
)
from router_service.readiness import (
    wait_for_grpc_serving,
    wait_for_http_ok,
    wait_for_port_file,
)

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_ROUTER_PORT = 50051
DEFAULT_CACHE_PORT = 50052
DEFAULT_LLAMA_PORT = 8081
FIRST_QUERY = "What is the capital of France?"

_Target = TypeVar("_Target")
_Result = TypeVar("_Result")


class StackStartError(RuntimeError):
    """A child process failed to start or did not become ready in time."""


@dataclass(frozen=True)
class StackOptions:
    """How to run the stack. Port 0 picks a free port for that process."""

    backend: str = "local"
    router_port: int = DEFAULT_ROUTER_PORT
    cache_port: int = DEFAULT_CACHE_PORT
    llama_port: int = DEFAULT_LLAMA_PORT
    llama_threads: int = 2
    run_dir: Path = Path(".run")
    router_config: Path = field(default_factory=default_router_config)
    startup_timeout_s: float = 300.0
    stop_grace_s: float = 10.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}"
            )
        for name in ("router_port", "cache_port", "llama_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ValueError(
                    f"{name} must be between 0 and 65535 (0 picks a free port); "
                    f"got {port}"
                )
        if self.llama_threads < 1:
            raise ValueError(
                f"llama_threads must be at least 1; got {self.llama_threads}"
            )
        for name in ("startup_timeout_s", "stop_grace_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if not self.router_config.is_file():
            raise ValueError(
                f"router_config {self.router_config} is not a file: pass the path of "
                "a router TOML config, or leave it out to use the packaged default"
            )


class LocalStack:
    """The three processes of a local deployment, started and stopped together.

    Use it as a context manager, or call `start` and then `stop` in a `finally`.
    """

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.run_dir = options.run_dir.resolve()
        self.children: list[ChildProcess] = []
        self.llama_base_url: str | None = None
        self.cache_address = ""
        self.router_address = ""

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start every process and wait until each is ready.

        The processes start in order (model server, cache, router) and then load
        their models in parallel. The router starts once the cache's port is known.

        Raises:
            StackStartError: a process exited or was not ready within
                `startup_timeout_s`; the message names it and ends with its log.
        """
        deadline = time.monotonic() + self.options.startup_timeout_s
        for folder in ("logs", "ports", "config"):
            (self.run_dir / folder).mkdir(parents=True, exist_ok=True)
        try:
            llama = self._start_llama() if self.options.backend == "local" else None
            cache = self._start_cache(deadline)
            router = self._start_router(deadline)

            if llama is not None:
                url = f"{self.llama_base_url}/models"
                self._wait(llama, wait_for_http_ok, url, deadline)
            self._wait(cache, wait_for_grpc_serving, self.cache_address, deadline)
            self._wait(router, wait_for_grpc_serving, self.router_address, deadline)
        except BaseException:
            self.stop()
            raise
        self._write_state_file()
        logger.info(
            "stack_ready router=%s cache=%s llama=%s",
            self.router_address,
            self.cache_address,
            self.llama_base_url,
        )

    def stop(self) -> None:
        """Stop every child: SIGTERM, then SIGKILL after `stop_grace_s`."""
        # Router first, so that it stops taking requests before its backends go.
        stop_all(list(reversed(self.children)), self.options.stop_grace_s)
        self.children.clear()

    def exited_child(self) -> ChildProcess | None:
        """Return a child that has exited on its own, if any."""
        return next((c for c in self.children if c.exit_code is not None), None)

    def _start_llama(self) -> ChildProcess:
        port = self.options.llama_port or _pick_free_port()
        _require_free_port(port, "--llama-port")
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(smollm2_gguf_path()),
            "--model_alias",
            LLAMA_MODEL_ALIAS,
            "--host",
            HOST,
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            str(self.options.llama_threads),
        ]
        self.llama_base_url = f"http://{HOST}:{port}/v1"
        return self._spawn("llama", command)

    def _start_cache(self, deadline: float) -> ChildProcess:
        if self.options.cache_port:
            _require_free_port(self.options.cache_port, "--cache-port")
        port_file = self._port_file("cache")
        command = [sys.executable, "-m", "cache_service", "--port-file", str(port_file)]
        child = self._spawn(
            "cache",
            command,
            QUERYGATE_CACHE_ADDRESS=f"{HOST}:{self.options.cache_port}",
            QUERYGATE_CACHE_DATA_DIR=str(self.run_dir / "data" / "cache"),
            QUERYGATE_CACHE_BACKUP_DIR=str(self.run_dir / "backups" / "cache"),
        )
        port = self._wait(child, wait_for_port_file, port_file, deadline)
        self.cache_address = f"{HOST}:{port}"
        return child

    def _start_router(self, deadline: float) -> ChildProcess:
        if self.options.router_port:
            _require_free_port(self.options.router_port, "--router-port")
        config = write_router_config(
            source=self.options.router_config,
            target=self.run_dir / "config" / "router.toml",
            cache_target=self.cache_address,
            llama_base_url=self.llama_base_url,
            simulate=self.options.backend == "simulator",
            ledger_backup_dir=self.run_dir / "backups" / "router",
        )
        port_file = self._port_file("router")
        command = [sys.executable, "-m", "router_service", "--config", str(config)]
        child = self._spawn(
            "router",
            [*command, "--port-file", str(port_file)],
            QUERYGATE_ROUTER_ADDRESS=f"{HOST}:{self.options.router_port}",
            QUERYGATE_ROUTER_CACHE_TARGET=self.cache_address,
            QUERYGATE_ROUTER_LEDGER_PATH=str(self.run_dir / "data" / "ledger.sqlite3"),
        )
        port = self._wait(child, wait_for_port_file, port_file, deadline)
        self.router_address = f"{HOST}:{port}"
        return child

    def _spawn(self, name: str, command: list[str], **env: str) -> ChildProcess:
        child_env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        log_path = self.run_dir / "logs" / f"{name}.log"
        log_path.unlink(missing_ok=True)
        child = spawn(name, command, log_path, child_env)
        self.children.append(child)
        return child

    def _port_file(self, name: str) -> Path:
        path = self.run_dir / "ports" / f"{name}.port"
        path.unlink(missing_ok=True)
        return path

    def _wait(
        self,
        child: ChildProcess,
        probe: Callable[[_Target, ChildProcess, float], _Result],
        target: _Target,
        deadline: float,
    ) -> _Result:
        """Run a readiness probe and turn its failure into an error naming the child."""
        try:
            return probe(target, child, deadline)
        except (TimeoutError, ChildProcessError) as error:
            raise StackStartError(
                f"{child.name} (pid {child.pid}) did not start: {error}\n"
                f"--- last lines of {child.log_path} ---\n{child.log_tail()}"
            ) from error

    def _write_state_file(self) -> None:
        state = {
            "launcher_pid": os.getpid(),
            "router_address": self.router_address,
            "cache_address": self.cache_address,
            "llama_base_url": self.llama_base_url,
            "children": {
                child.name: {"pid": child.pid, "log": str(child.log_path)}
                for child in self.children
            },
        }
        (self.run_dir / "stack.json").write_text(json.dumps(state, indent=2) + "\n")


def _pick_free_port() -> int:
    # NOTE: another process can take the port before llama.cpp binds it, because
    # uvicorn cannot bind port 0 and report the bound port back.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _require_free_port(port: int, option: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError as error:
            raise StackStartError(
                f"port {port} on {HOST} is in use ({error.strerror}): stop the "
                f"process that holds it, or pass {option} with another port "
                "(0 picks a free one)"
            ) from error


class _StopRequested(Exception):
    """SIGTERM or SIGINT arrived."""


def _raise_stop_requested(signum: int, frame: FrameType | None) -> None:
    raise _StopRequested(signal.Signals(signum).name)


def parse_args(argv: Sequence[str] | None) -> StackOptions:
    """Parse the command line into StackOptions."""
    parser = argparse.ArgumentParser(
        prog="python -m router_service.local_stack",
        description="Start the local model, the cache service and the router; "
        "Ctrl-C or SIGTERM stops all three.",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: every model of the config on the SmolLM2 llama.cpp server; "
        "simulator: every model simulated, no llama.cpp server (default: local)",
    )

    parser.add_argument(
        "--router-port",
        type=int,
        default=DEFAULT_ROUTER_PORT,
        help="127.0.0.1 port of the router's gRPC API; 0 picks a free port "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--cache-port",
        type=int,
        default=DEFAULT_CACHE_PORT,
        help="127.0.0.1 port of the cache service's gRPC API; 0 picks a free port "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--llama-port",
        type=int,
        default=DEFAULT_LLAMA_PORT,
        help="127.0.0.1 port of the llama.cpp server's HTTP API (--backend local "
        "only); 0 picks a free port (default: %(default)s)",
    )
    parser.add_argument(
        "--llama-threads", type=int, default=2, help="CPU threads for llama.cpp"
    )

    parser.add_argument(
        "--config",
        type=Path,
        default=default_router_config(),
        help="router TOML config to start from (default: the packaged one)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path(".run"),
        help="folder for logs, port files, cache data and the derived config",
    )
    parser.add_argument(
        "--startup-timeout-s",
        type=float,
        default=300.0,
        help="seconds to wait for all three processes to be ready",
    )
    args = parser.parse_args(argv)

    try:
        return StackOptions(
            backend=args.backend,
            router_port=args.router_port,
            cache_port=args.cache_port,
            llama_port=args.llama_port,
            llama_threads=args.llama_threads,
            run_dir=args.run_dir,
            router_config=args.config,
            startup_timeout_s=args.startup_timeout_s,
        )
    except ValueError as error:
        parser.error(str(error))


def _print_ready(stack: LocalStack) -> None:
    if stack.llama_base_url is not None:
        print(f"llama.cpp server (SmolLM2)  {stack.llama_base_url}")
    else:
        print("model backend              simulator (no llama.cpp server)")
    print(f"cache service (gRPC)       {stack.cache_address}")
    print(f"router service (gRPC)      {stack.router_address}")
    print(f"logs                       {stack.run_dir / 'logs'}")
    target = ""
    if stack.router_address != f"{HOST}:{DEFAULT_ROUTER_PORT}":
        target = f"--target {stack.router_address} "
    print("\nTry it from another terminal:")
    print(f'  .venv/bin/python -m router_service.client {target}"{FIRST_QUERY}"')
    print("\nCtrl-C stops them all.", flush=True)


def run(options: StackOptions) -> int:
    """Start the stack, serve until a signal or a child's exit, then stop it all."""
    signal.signal(signal.SIGTERM, _raise_stop_requested)
    signal.signal(signal.SIGINT, _raise_stop_requested)
    stack = LocalStack(options)
    try:
        print("Starting the stack; the first start loads models for up to a minute.")
        stack.start()
        _print_ready(stack)
        while (exited := stack.exited_child()) is None:
            time.sleep(0.5)
        print(
            f"{exited.name} exited with code {exited.exit_code}; stopping the rest.\n"
            f"--- last lines of {exited.log_path} ---\n{exited.log_tail()}",
            file=sys.stderr,
        )
        return 1
    except StackStartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except _StopRequested as stop:
        print(f"\n{stop} received; stopping.", flush=True)
        return 0
    finally:
        # A second Ctrl-C must not interrupt the shutdown and leave children behind.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m router_service.local_stack`."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # httpx logs every readiness poll at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
