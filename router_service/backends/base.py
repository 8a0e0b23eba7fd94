"""The `ModelBackend` seam: chat-completion requests and results, no transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a chat: role is "system", "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class CompletionRequest:
    """A chat-completion request; `timeout_s` bounds this single call."""

    messages: tuple[ChatMessage, ...]
    timeout_s: float
    temperature: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class Completion:
    """A finished answer with the token counts that the server reported."""

    text: str
    finish_reason: str
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class CompletionChunk:
    """One streamed piece of an answer.

    The last chunk has a `finish_reason` and, when the server reported usage,
    the token counts; earlier chunks carry only text.
    """

    text: str
    finish_reason: str = ""
    input_tokens: int = 0
    output_tokens: int = 0


class ModelBackend(Protocol):
    """A model reachable through chat completions.

    Implementations raise subclasses of `router_service.errors.ModelCallError`
    and nothing else for call failures.
    """

    name: str

    async def complete(self, request: CompletionRequest) -> Completion: ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[CompletionChunk]: ...

    async def aclose(self) -> None: ...


def estimate_tokens(text: str) -> int:
    """Estimate a token count as one token per 4 characters, at least 1.

    Used only when a server reports no usage. NOTE: 4 characters per token is
    the median for English questions with the SmolLM2 tokenizer (3.6-3.9);
    code, math and non-Latin text have fewer characters per token.
    """
    return max(1, (len(text) + 3) // 4)


# Characters per token for the prompt size guard: the 5th percentile measured
# on English questions with the SmolLM2 tokenizer, so the guard rarely lets an
# oversized English prompt through.
GUARD_CHARS_PER_TOKEN = 3


def estimate_prompt_tokens(messages: tuple[ChatMessage, ...]) -> int:
    """Estimate a chat's prompt tokens on the high side, for the size guard.

    Counts one token per `GUARD_CHARS_PER_TOKEN` characters plus 4 tokens of
    chat-template framing per message. NOTE: an estimate without the model's
    tokenizer; code and non-Latin text can still exceed it.
    """
    return sum(-(-len(m.content) // GUARD_CHARS_PER_TOKEN) + 4 for m in messages)
