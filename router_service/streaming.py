"""Streaming routing: forward an answer's text as the model produces it.

Retries and fallback apply only until the first text arrives: after that the
caller has part of an answer, so a failure ends the stream with the error.
The answer is stored in the cache only when the stream finished normally.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from router_service.accounting import (
    ModelAnswer,
    result_from_answer,
    result_from_hit,
)
from router_service.backends.base import (
    ChatMessage,
    Completion,
    CompletionChunk,
    CompletionRequest,
)
from router_service.domain import RouteQuery, RouteResult, validate_query
from router_service.errors import (
    ModelCallError,
    ModelRefusedError,
    ModelResponseError,
    NoModelAvailableError,
)
from router_service.resilience import call_with_retries
from router_service.routing import Router
from router_service.settings import ModelSettings

StreamEvent = str | RouteResult
OpenedStream = tuple[AsyncIterator[CompletionChunk], CompletionChunk]


class StreamingRouter(Router):
    """A `Router` that can also stream answers (`route_stream`)."""

    async def route_stream(
        self, query: RouteQuery, deadline: float | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Yield the answer's text deltas, then one `RouteResult` summary.

        A cache hit is streamed as a single delta. Raises the same errors as
        `Router.route`, plus `ModelCallError` when a stream breaks after its
        first text.
        """
        started = self._clock()
        validate_query(query, self._settings)
        if self._accounting is not None:
            await self._accounting.admit(query)
        request_id = uuid.uuid4().hex[:16]

        status, hit, tier = await self._lookup_and_classify(query)
        if hit is not None:
            yield hit.answer
            result = result_from_hit(
                self._settings, hit, status, tier, request_id, self._elapsed_ms(started)
            )
            yield await self._record(query, result)
            return

        messages = query.messages()
        failures: list[str] = []
        for candidate_tier, model in await self._fitting_chain(query, tier):
            self._check_deadline(deadline)
            try:
                stream, first = await self._open_stream(
                    model, query, messages, deadline
                )
            except ModelRefusedError:
                raise
            except ModelCallError as error:
                failures.append(f"{model.name}: {type(error).__name__}")
                self._fall_back(model.name, candidate_tier, error)
                continue

            parts: list[str] = []
            completion: Completion | None = None
            async for delta in self._forward(model, stream, first, parts):
                if isinstance(delta, Completion):
                    completion = delta
                else:
                    yield delta
            if completion is None:
                raise ModelResponseError(model.name, "stream ended without usage")
            answer = ModelAnswer(completion, model, candidate_tier)
            entry_id = await self._store(query, status, answer, request_id)
            result = result_from_answer(
                self._settings,
                answer,
                status,
                entry_id,
                request_id,
                self._elapsed_ms(started),
            )
            yield await self._record(query, result)
            return

        degraded = await self._degraded_result(query, status, tier, request_id, started)
        if degraded is None:
            raise NoModelAvailableError(
                "every model failed: " + "; ".join(failures) + ". Retry later."
            )
        yield degraded.answer
        yield await self._record(query, degraded)

    async def _open_stream(
        self,
        model: ModelSettings,
        query: RouteQuery,
        messages: tuple[ChatMessage, ...],
        deadline: float | None,
    ) -> OpenedStream:
        """Start a stream and wait for its first chunk, with retries and breaker."""
        backend = self._backends[model.name]
        breaker = self.breakers[model.name]

        async def attempt(remaining_s: float) -> OpenedStream:
            request = CompletionRequest(
                messages=messages,
                timeout_s=min(model.timeout_s, remaining_s),
                temperature=query.temperature,
                max_tokens=query.max_tokens,
            )
            async with breaker.guard(deadline_clipped=remaining_s < model.timeout_s):
                stream = backend.stream(request)
                try:
                    first = await anext(stream)
                except StopAsyncIteration:
                    raise ModelResponseError(model.name, "empty stream") from None
                except BaseException:
                    await stream.aclose()  # type: ignore[attr-defined]
                    raise
                return stream, first

        return await call_with_retries(
            self._observed_attempts(model.name, attempt),
            self._settings.resilience,
            deadline,
            clock=self._clock,
        )

    async def _forward(
        self,
        model: ModelSettings,
        stream: AsyncIterator[CompletionChunk],
        first: CompletionChunk,
        parts: list[str],
    ) -> AsyncIterator[str | Completion]:
        """Yield each chunk's text, then the finished `Completion`."""
        chunk = first
        try:
            while True:
                if chunk.text:
                    parts.append(chunk.text)
                    yield chunk.text
                if chunk.finish_reason:
                    yield Completion(
                        text="".join(parts),
                        finish_reason=chunk.finish_reason,
                        input_tokens=chunk.input_tokens,
                        output_tokens=chunk.output_tokens,
                    )
                    return
                chunk = await anext(stream)
        except StopAsyncIteration:
            return
        except ModelCallError as error:
            # The stream broke after text was sent, so the model counts as failing.
            # NOTE: this includes a read timeout that the caller's deadline cut
            # short, which `breaker.guard` does not count when opening a stream.
            if error.retryable or isinstance(error, ModelResponseError):
                self.breakers[model.name].record_failure()
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
