"""A chat-completions client for any OpenAI-compatible HTTP server.

Works with OpenAI, vLLM, Ollama and llama.cpp's server: it posts to
`{base_url}/chat/completions` and maps every transport or protocol failure to a
`ModelCallError` subclass, so callers never see an httpx exception.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from router_service.backends.base import (
    Completion,
    CompletionChunk,
    CompletionRequest,
    estimate_tokens,
)
from router_service.errors import (
    ModelConnectionError,
    ModelHTTPError,
    ModelRefusedError,
    ModelResponseError,
    ModelTimeoutError,
)
from router_service.settings import ModelSettings

# OpenAI reports a content-policy refusal as this finish reason.
_REFUSAL_FINISH_REASON = "content_filter"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Convert a Retry-After header (seconds or an HTTP date) to seconds from now."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, moment.timestamp() - current)


class OpenAIChatBackend:
    """Calls one model on an OpenAI-compatible server over async HTTP."""

    def __init__(
        self,
        settings: ModelSettings,
        *,
        api_key: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = settings.name
        self._model = settings.model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=settings.timeout_s,
            transport=transport,
        )

    def _body(self, request: CompletionRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [
                {"role": m.role, "content": m.content} for m in request.messages
            ],
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_tokens"] = request.max_tokens
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def complete(self, request: CompletionRequest) -> Completion:
        """Send one chat-completion request and parse the answer.

        Raises:
            ModelTimeoutError, ModelConnectionError: transport failures.
            ModelHTTPError: the server returned a status of 400 or more.
            ModelResponseError: the body is not a valid chat completion.
            ModelRefusedError: the server refused the prompt (content filter).
        """
        body = self._body(request, stream=False)
        try:
            response = await self._client.post(
                "chat/completions", json=body, timeout=request.timeout_s
            )
        except httpx.TimeoutException as exc:
            raise ModelTimeoutError(
                self.name, f"no answer within {request.timeout_s:.1f} s"
            ) from exc
        except httpx.TransportError as exc:
            raise ModelConnectionError(
                self.name, f"connection failed: {type(exc).__name__}"
            ) from exc
        self._raise_for_status(response)
        return self._parse_completion(response, request)

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            raise ModelHTTPError(
                self.name,
                response.status_code,
                retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
            )

    def _parse_completion(
        self, response: httpx.Response, request: CompletionRequest
    ) -> Completion:
        try:
            payload = response.json()
            choice = payload["choices"][0]
            text = choice["message"]["content"] or ""
            finish_reason = choice.get("finish_reason") or "stop"
            usage = payload.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelResponseError(
                self.name, f"invalid chat-completion body ({type(exc).__name__})"
            ) from exc
        if not isinstance(text, str):
            raise ModelResponseError(self.name, "message content is not a string")
        input_tokens = _int_or_none(usage.get("prompt_tokens"))
        output_tokens = _int_or_none(usage.get("completion_tokens"))
        if finish_reason == _REFUSAL_FINISH_REASON:
            raise ModelRefusedError(
                self.name,
                "the server refused the prompt (content filter)",
                reported_input_tokens=input_tokens or 0,
                reported_output_tokens=output_tokens or 0,
            )
        prompt_text = " ".join(m.content for m in request.messages)
        return Completion(
            text=text,
            finish_reason=finish_reason,
            input_tokens=(
                estimate_tokens(prompt_text) if input_tokens is None else input_tokens
            ),
            output_tokens=(
                estimate_tokens(text) if output_tokens is None else output_tokens
            ),
        )

    async def stream(
        self, request: CompletionRequest
    ) -> AsyncIterator[CompletionChunk]:
        """Stream an answer as server-sent events, one chunk per text delta.

        The last chunk carries the finish reason and token counts. A stream that
        ends without a finish reason raises `ModelResponseError`.
        """
        body = self._body(request, stream=True)
        try:
            async with self._client.stream(
                "POST", "chat/completions", json=body, timeout=request.timeout_s
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._raise_for_status(response)
                async for chunk in self._read_events(response, request):
                    yield chunk
        except httpx.TimeoutException as exc:
            raise ModelTimeoutError(self.name, "stream timed out") from exc
        except httpx.TransportError as exc:
            raise ModelConnectionError(
                self.name, f"stream broke: {type(exc).__name__}"
            ) from exc

    async def _read_events(
        self, response: httpx.Response, request: CompletionRequest
    ) -> AsyncIterator[CompletionChunk]:
        finish_reason = ""
        usage: dict[str, Any] = {}
        parts: list[str] = []
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                break
            event = _parse_event(self.name, data)
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content") or ""
                finish_reason = choice.get("finish_reason") or finish_reason
                if delta:
                    parts.append(delta)
                    yield CompletionChunk(text=delta)
        if not finish_reason:
            raise ModelResponseError(self.name, "stream ended without a finish reason")
        if finish_reason == _REFUSAL_FINISH_REASON:
            raise ModelRefusedError(
                self.name, "the server refused the prompt (content filter)"
            )
        prompt_text = " ".join(m.content for m in request.messages)
        input_tokens = _int_or_none(usage.get("prompt_tokens"))
        output_tokens = _int_or_none(usage.get("completion_tokens"))
        yield CompletionChunk(
            text="",
            finish_reason=finish_reason,
            input_tokens=input_tokens or estimate_tokens(prompt_text),
            output_tokens=output_tokens or estimate_tokens("".join(parts)),
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()


def _parse_event(model: str, data: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise ModelResponseError(model, "invalid JSON in a stream event") from exc
    if not isinstance(event, dict):
        raise ModelResponseError(model, "stream event is not a JSON object")
    return event


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
