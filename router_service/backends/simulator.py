"""A deterministic stand-in for a model, for tests and load benchmarks.

It sleeps for a configured latency, reports configured token counts and fails
with HTTP 503 at a configured rate drawn from a seeded generator. Its answers
say that they are simulated. It is used only for models whose configuration
says `backend = "simulator"`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator

from router_service.backends.base import (
    Completion,
    CompletionChunk,
    CompletionRequest,
    estimate_prompt_tokens,
)
from router_service.errors import ModelHTTPError, ModelTimeoutError
from router_service.settings import ModelSettings


class SimulatedBackend:
    """Model backend that returns a fixed-size simulated reply to every request."""

    def __init__(self, settings: ModelSettings) -> None:
        self.name = settings.name
        self._latency_s = settings.latency_ms / 1000.0
        self._output_tokens = settings.output_tokens
        self._failure_rate = settings.failure_rate
        self._random = random.Random(settings.seed)
        self.calls = 0

    def _answer(self, request: CompletionRequest) -> tuple[list[str], str]:
        question = request.messages[-1].content if request.messages else ""
        digest = hashlib.sha256(question.encode("utf-8")).hexdigest()[:8]
        words = [f"[simulated answer from {self.name} for question {digest}]"]
        filler = ("This", "reply", "was", "generated", "by", "the", "simulator.")
        limit = self._output_tokens
        if request.max_tokens is not None:
            limit = min(limit, request.max_tokens)
        words += [filler[i % len(filler)] for i in range(max(0, limit - 1))]
        finish_reason = "stop" if limit == self._output_tokens else "length"
        return words[:limit], finish_reason

    async def _wait_and_maybe_fail(self, request: CompletionRequest) -> None:
        self.calls += 1
        if self._latency_s > request.timeout_s:
            await asyncio.sleep(request.timeout_s)
            raise ModelTimeoutError(
                self.name, f"no answer within {request.timeout_s:.1f} s"
            )
        await asyncio.sleep(self._latency_s)
        if self._random.random() < self._failure_rate:
            raise ModelHTTPError(self.name, 503)

    async def complete(self, request: CompletionRequest) -> Completion:
        """Return the simulated answer after the configured latency.

        Raises:
            ModelHTTPError: a simulated 503, at the configured failure rate.
            ModelTimeoutError: the latency exceeds the request's timeout.
        """
        await self._wait_and_maybe_fail(request)
        words, finish_reason = self._answer(request)
        return Completion(
            text=" ".join(words),
            finish_reason=finish_reason,
            input_tokens=estimate_prompt_tokens(request.messages),
            output_tokens=len(words),
        )

    async def stream(
        self, request: CompletionRequest
    ) -> AsyncIterator[CompletionChunk]:
        """Yield the simulated answer word by word, then a final chunk with usage."""
        await self._wait_and_maybe_fail(request)
        words, finish_reason = self._answer(request)
        for index, word in enumerate(words):
            yield CompletionChunk(text=word if index == 0 else " " + word)
        yield CompletionChunk(
            text="",
            finish_reason=finish_reason,
            input_tokens=estimate_prompt_tokens(request.messages),
            output_tokens=len(words),
        )

    async def aclose(self) -> None:
        """Release nothing: the simulator holds no connections."""
